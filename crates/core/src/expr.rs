//! The `if` expression language of event filters (DESIGN §3.4): comparisons over dotted
//! paths into JSON (`event.data.amount > 100`, `async.data.userId == event.data.userId`),
//! literals (numbers, 'strings' or "strings", true, false, null), `==`, `!=`, `<`, `<=`, `>`,
//! `>=`, `&&`, `||`, `!` and parentheses. Parse errors point at the column.
//!
//! Evaluation never fails: a missing path is `null`; comparing values of different types
//! with `<`/`>` is false; the result is true only for the boolean `true`.

use crate::error::{Error, Result};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Path(Vec<String>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Dot,
}

struct Lexer<'a> {
    src: &'a str,
    option: &'a str,
}

impl Lexer<'_> {
    fn err(&self, col: usize, why: &str) -> Error {
        Error::BadOption {
            option: self.option.to_string(),
            reason: format!("{why} at column {} of expression {:?}", col + 1, self.src),
        }
    }

    fn tokens(&self) -> Result<Vec<(Tok, usize)>> {
        let b = self.src.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let start = i;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    i += 1;
                    continue;
                }
                b'(' => {
                    out.push((Tok::LParen, i));
                    i += 1;
                }
                b')' => {
                    out.push((Tok::RParen, i));
                    i += 1;
                }
                b'.' if matches!(out.last(), Some((Tok::Ident(_) | Tok::Num(_), _)))
                    || !b.get(i + 1).is_some_and(u8::is_ascii_digit) =>
                {
                    out.push((Tok::Dot, i));
                    i += 1;
                }
                b'=' | b'!' | b'<' | b'>' | b'&' | b'|' => {
                    let two = self.src.get(i..i + 2).unwrap_or("");
                    let op: &'static str = match two {
                        "==" => "==",
                        "!=" => "!=",
                        "<=" => "<=",
                        ">=" => ">=",
                        "&&" => "&&",
                        "||" => "||",
                        _ => match c {
                            b'<' => "<",
                            b'>' => ">",
                            b'!' => "!",
                            b'=' => return Err(self.err(i, "use `==` to compare")),
                            _ => return Err(self.err(i, "expected `&&` or `||`")),
                        },
                    };
                    i += op.len();
                    // `===` / `!==` as in JS mean the same here.
                    if (op == "==" || op == "!=") && b.get(i) == Some(&b'=') {
                        i += 1;
                    }
                    out.push((Tok::Op(op), start));
                }
                b'\'' | b'"' => {
                    i += 1;
                    let mut s = String::new();
                    loop {
                        let Some(&ch) = b.get(i) else {
                            return Err(self.err(start, "unterminated string"));
                        };
                        if ch == c {
                            i += 1;
                            break;
                        }
                        if ch == b'\\' {
                            // The escaped character may be several bytes long (`'\é'`).
                            let Some(esc) = self.src[i + 1..].chars().next() else {
                                return Err(self.err(i, "unterminated string"));
                            };
                            s.push(match esc {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                            i += 1 + esc.len_utf8();
                            continue;
                        }
                        let ch_str = &self.src[i..];
                        let chr = ch_str.chars().next().unwrap_or('\u{fffd}');
                        s.push(chr);
                        i += chr.len_utf8();
                    }
                    out.push((Tok::Str(s), start));
                }
                b'0'..=b'9' | b'-' | b'.' => {
                    // After a `.` this is a path segment (an array index): digits only.
                    let index = matches!(out.last(), Some((Tok::Dot, _)));
                    i += 1;
                    while i < b.len()
                        && (b[i].is_ascii_digit() || (!index && matches!(b[i], b'.' | b'e' | b'E')))
                    {
                        i += 1;
                    }
                    let n: f64 = self.src[start..i]
                        .parse()
                        .map_err(|_| self.err(start, "bad number"))?;
                    out.push((Tok::Num(n), start));
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric()
                            || b[i] == b'_'
                            || b[i] == b'$'
                            || b[i] == b'-')
                    {
                        i += 1;
                    }
                    out.push((Tok::Ident(self.src[start..i].to_string()), start));
                }
                _ => return Err(self.err(i, &format!("unexpected character {:?}", c as char))),
            }
        }
        Ok(out)
    }
}

struct Parser<'a> {
    lx: Lexer<'a>,
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn col(&self) -> usize {
        self.toks
            .get(self.pos)
            .map(|t| t.1)
            .unwrap_or(self.lx.src.len())
    }
    fn or(&mut self) -> Result<Expr> {
        let mut l = self.and()?;
        while self.peek() == Some(&Tok::Op("||")) {
            self.pos += 1;
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr> {
        let mut l = self.cmp()?;
        while self.peek() == Some(&Tok::Op("&&")) {
            self.pos += 1;
            l = Expr::And(Box::new(l), Box::new(self.cmp()?));
        }
        Ok(l)
    }
    fn cmp(&mut self) -> Result<Expr> {
        let l = self.unary()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => CmpOp::Eq,
            Some(Tok::Op("!=")) => CmpOp::Ne,
            Some(Tok::Op("<")) => CmpOp::Lt,
            Some(Tok::Op("<=")) => CmpOp::Le,
            Some(Tok::Op(">")) => CmpOp::Gt,
            Some(Tok::Op(">=")) => CmpOp::Ge,
            _ => return Ok(l),
        };
        self.pos += 1;
        let r = self.unary()?;
        Ok(Expr::Cmp(op, Box::new(l), Box::new(r)))
    }
    fn unary(&mut self) -> Result<Expr> {
        if self.peek() == Some(&Tok::Op("!")) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.atom()
    }
    fn atom(&mut self) -> Result<Expr> {
        let col = self.col();
        let Some((tok, _)) = self.toks.get(self.pos).cloned() else {
            return Err(self.lx.err(col, "expression ends too early"));
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Lit(
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
            )),
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::LParen => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.lx.err(self.col(), "expected `)`"));
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" | "undefined" => Ok(Expr::Lit(Value::Null)),
                _ => {
                    let mut path = vec![id];
                    while self.peek() == Some(&Tok::Dot) {
                        self.pos += 1;
                        let col = self.col();
                        match self.toks.get(self.pos).cloned() {
                            Some((Tok::Ident(seg), _)) => {
                                path.push(seg);
                                self.pos += 1;
                            }
                            Some((Tok::Num(n), _)) if n.fract() == 0.0 && n >= 0.0 => {
                                path.push(format!("{n}"));
                                self.pos += 1;
                            }
                            _ => return Err(self.lx.err(col, "expected a field name after `.`")),
                        }
                    }
                    Ok(Expr::Path(path))
                }
            },
            _ => Err(self.lx.err(col, "expected a value, a path or `(`")),
        }
    }
}

impl Expr {
    /// Replaces every path under `root` by its value in `value` (a literal): binds the
    /// waiting run's own event into a wait's `if` once, at registration.
    pub fn bind(self, root: &str, value: &Value) -> Expr {
        match self {
            Expr::Path(p) if p[0] == root => {
                Expr::Lit(lookup(value, &p[1..]).cloned().unwrap_or(Value::Null))
            }
            Expr::Not(x) => Expr::Not(Box::new(x.bind(root, value))),
            Expr::And(a, b) => {
                Expr::And(Box::new(a.bind(root, value)), Box::new(b.bind(root, value)))
            }
            Expr::Or(a, b) => {
                Expr::Or(Box::new(a.bind(root, value)), Box::new(b.bind(root, value)))
            }
            Expr::Cmp(op, a, b) => Expr::Cmp(
                op,
                Box::new(a.bind(root, value)),
                Box::new(b.bind(root, value)),
            ),
            other => other,
        }
    }
}

impl Expr {
    /// An equality every match must meet — `root.path == "text"` (or `true`/`false`) on its
    /// own or as a term of `&&` — as (`path`, the literal), or None. A wait's `if` of that
    /// shape (Inngest's `async.data.id == event.data.id`, once the run's event is bound) is
    /// looked up in the event value index instead of scanning. Numbers are left out: `==`
    /// compares them by value (1 == 1.0), the index by text.
    pub fn required_equality(&self, root: &str) -> Option<(String, Value)> {
        match self {
            Expr::Cmp(CmpOp::Eq, a, b) => match (&**a, &**b) {
                (Expr::Path(p), Expr::Lit(v)) | (Expr::Lit(v), Expr::Path(p))
                    if p.len() > 1 && p[0] == root && (v.is_string() || v.is_boolean()) =>
                {
                    Some((p[1..].join("."), v.clone()))
                }
                _ => None,
            },
            Expr::And(a, b) => a
                .required_equality(root)
                .or_else(|| b.required_equality(root)),
            _ => None,
        }
    }
}

/// The most operators and parentheses an expression may have. Parsing, evaluating,
/// binding and dropping recurse once per level of nesting, and a chain of `&&`/`||` nests
/// too: without a bound, a long or deeply nested expression overflows the stack (found by
/// fuzzing). A filter needs a handful.
pub const MAX_OPERATORS: usize = 128;

/// Parses `src`; errors are `E_BAD_OPTION` naming `option` and the column.
pub fn parse(option: &str, src: &str) -> Result<Expr> {
    let lx = Lexer { src, option };
    let toks = lx.tokens()?;
    let nesting = toks
        .iter()
        .filter(|(t, _)| matches!(t, Tok::LParen | Tok::Op(_)));
    if let Some((_, col)) = nesting.clone().nth(MAX_OPERATORS) {
        return Err(lx.err(
            *col,
            &format!("more than {MAX_OPERATORS} operators and parentheses"),
        ));
    }
    let mut p = Parser { lx, toks, pos: 0 };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(p.lx.err(p.col(), "unexpected text after the expression"));
    }
    Ok(e)
}

/// Looks up a dotted path in JSON (`data.user.id`, array indexes as numbers); `None` if absent.
pub fn lookup<'v, S: AsRef<str>>(root: &'v Value, path: &[S]) -> Option<&'v Value> {
    let mut v = root;
    for seg in path {
        let seg = seg.as_ref();
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn equal(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A key from an expression: a string as it is, `null` (absent) as the empty key (task-wide),
/// anything else as its JSON text.
pub fn key_value(e: &Expr, roots: &[(&str, &Value)]) -> String {
    match value(e, roots) {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => serde_json::to_string(&other).unwrap_or_default(),
    }
}

/// Evaluates with named roots (`event`, `async`). The result is true only for `true`.
pub fn eval(e: &Expr, roots: &[(&str, &Value)]) -> bool {
    value(e, roots) == Value::Bool(true)
}

fn value(e: &Expr, roots: &[(&str, &Value)]) -> Value {
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::Path(p) => roots
            .iter()
            .find(|(name, _)| *name == p[0])
            .and_then(|(_, root)| lookup(root, &p[1..]))
            .cloned()
            .unwrap_or(Value::Null),
        Expr::Not(x) => Value::Bool(!truthy(&value(x, roots))),
        Expr::And(a, b) => Value::Bool(truthy(&value(a, roots)) && truthy(&value(b, roots))),
        Expr::Or(a, b) => Value::Bool(truthy(&value(a, roots)) || truthy(&value(b, roots))),
        Expr::Cmp(op, a, b) => {
            let (a, b) = (value(a, roots), value(b, roots));
            let r = match op {
                CmpOp::Eq => equal(&a, &b),
                CmpOp::Ne => !equal(&a, &b),
                _ => match (&a, &b) {
                    (Value::Number(_), Value::Number(_)) => {
                        let (x, y) = (num(&a).unwrap_or(f64::NAN), num(&b).unwrap_or(f64::NAN));
                        ord(*op, x.partial_cmp(&y))
                    }
                    (Value::String(x), Value::String(y)) => ord(*op, Some(x.cmp(y))),
                    _ => false,
                },
            };
            Value::Bool(r)
        }
    }
}

fn ord(op: CmpOp, o: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    matches!(
        (op, o),
        (CmpOp::Lt, Some(Less))
            | (CmpOp::Le, Some(Less | Equal))
            | (CmpOp::Gt, Some(Greater))
            | (CmpOp::Ge, Some(Greater | Equal))
    )
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(src: &str, event: Value, incoming: Value) -> bool {
        eval(
            &parse("if", src).unwrap(),
            &[("event", &event), ("async", &incoming)],
        )
    }

    #[test]
    fn an_equality_every_match_must_meet_is_found_for_the_index() {
        let trigger = json!({"data": {"userId": "u1", "n": 3}});
        let req = |src: &str| {
            parse("if", src)
                .unwrap()
                .bind("event", &trigger)
                .required_equality("async")
        };
        let u1 = Some(("data.userId".to_string(), json!("u1")));
        assert_eq!(req("async.data.userId == event.data.userId"), u1);
        assert_eq!(
            req("event.data.userId == async.data.userId && async.data.x > 1"),
            u1
        );
        assert_eq!(req("async.data.x > 1 && async.data.userId == 'u1'"), u1);
        assert_eq!(
            req("async.data.ok == true"),
            Some(("data.ok".to_string(), json!(true)))
        );
        // Not required of every match, or compared by value rather than text: no index.
        assert_eq!(req("async.data.userId == 'u1' || async.data.x > 1"), None);
        assert_eq!(req("!(async.data.userId == 'u1')"), None);
        assert_eq!(req("async.data.n == event.data.n"), None);
        assert_eq!(req("async.data.userId != 'u1'"), None);
        assert_eq!(req("async == 'u1'"), None);
    }

    #[test]
    fn compares_paths_and_literals() {
        let ev = json!({"name": "order/paid", "data": {"amount": 150, "user": {"id": "u1"}, "tags": ["a"]}});
        assert!(check("event.data.amount > 100", ev.clone(), json!(null)));
        assert!(!check("event.data.amount > 150", ev.clone(), json!(null)));
        assert!(check(
            "event.data.amount >= 150 && event.name == 'order/paid'",
            ev.clone(),
            json!(null)
        ));
        assert!(check(
            "event.data.user.id == \"u1\" || false",
            ev.clone(),
            json!(null)
        ));
        assert!(check("!(event.data.amount < 100)", ev.clone(), json!(null)));
        assert!(check("event.data.tags.0 == 'a'", ev.clone(), json!(null)));
        assert!(check("event.data.missing == null", ev.clone(), json!(null)));
        assert!(check("event.data.amount != 1", ev.clone(), json!(null)));
        assert!(check("event.data.amount === 150", ev, json!(null)));
    }

    #[test]
    fn compares_the_waiting_runs_event_with_the_incoming_one() {
        let trigger = json!({"data": {"userId": "u1"}});
        assert!(check(
            "async.data.userId == event.data.userId",
            trigger.clone(),
            json!({"data": {"userId": "u1"}})
        ));
        assert!(!check(
            "async.data.userId == event.data.userId",
            trigger,
            json!({"data": {"userId": "u2"}})
        ));
    }

    #[test]
    fn mixed_types_never_order() {
        assert!(!check("event.a < 'x'", json!({"a": 1}), json!(null)));
        assert!(!check("event.a > 0", json!({"a": "1"}), json!(null)));
    }

    /// Found by fuzzing (`fuzz/`, target `expr`): a backslash before a character of several
    /// bytes sliced the source in the middle of that character and panicked.
    #[test]
    fn an_escaped_multibyte_character_is_that_character() {
        assert!(parse("if", "'$\\\u{784}").is_err()); // the fuzzer's input: unterminated
        assert!(check(
            "event.s == '\\é\\日'",
            json!({"s": "é日"}),
            json!(null)
        ));
        assert!(check(
            "event.s == \"a\\n\\'\"",
            json!({"s": "a\n'"}),
            json!(null)
        ));
    }

    /// Found by fuzzing: deeply nested parentheses, a long run of `!` or a long `||` chain
    /// overflowed the stack (parsing, or evaluating the left-nested chain). Expressions are
    /// bounded; the largest accepted one parses, binds, evaluates and drops on a 1 MiB
    /// stack (about Node's main thread) even unoptimized.
    #[test]
    fn nesting_is_bounded() {
        let n = MAX_OPERATORS;
        let too_deep = [
            format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}true", "!".repeat(100_000)),
            format!("{}a", "a || ".repeat(100_000)),
            format!("{}1{}", "(".repeat(n + 1), ")".repeat(n + 1)),
        ];
        for src in &too_deep {
            let e = parse("on.if", src).unwrap_err();
            assert_eq!(e.code(), "E_BAD_OPTION");
            assert!(e.to_string().contains("more than 128 operators"), "{e}");
        }
        let deepest = [
            format!("{}event.a{}", "(".repeat(n), ")".repeat(n)),
            format!("{}event.a", "!".repeat(n)),
            format!("{}event.a", "event.b || ".repeat(n)),
            format!("{}event.a{}", "(!".repeat(n / 2), ")".repeat(n / 2)),
        ];
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let ev = json!({"a": true, "b": false});
                for src in &deepest {
                    let e = parse("on.if", src).unwrap();
                    assert!(eval(&e, &[("event", &ev)]), "{src}");
                    let bound = e.bind("event", &ev);
                    assert!(eval(&bound, &[]), "{src}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn parse_errors_point_at_the_column() {
        for (src, col) in [
            ("event.a = 1", 9),
            ("event.a > ", 11),
            ("(event.a > 1", 13),
            ("event. > 1", 8),
            ("event.a # 1", 9),
            ("'abc", 1),
        ] {
            let e = parse("on.if", src).unwrap_err();
            assert_eq!(e.code(), "E_BAD_OPTION");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("column {col} ")) && msg.contains("on.if"),
                "{src}: {msg}"
            );
        }
    }
}
