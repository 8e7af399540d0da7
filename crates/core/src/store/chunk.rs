//! Large values, split so that sled never writes a blob file.
//!
//! sled 0.34 writes any log item larger than a quarter of its segment (~128 KiB) to a file
//! of its own under `blobs/`, and never fsyncs those files or their folder: a value stored
//! that way is acknowledged before it is on disk, and after a power cut the log points at a
//! blob that is not there (recovery then stops at that entry, losing everything after it,
//! or panics). An item is a whole tree node, and a leaf node holds up to 17 entries, so
//! keeping *each value* under ~7 KiB keeps every node under the threshold.
//!
//! `Chunked` wraps any backend: a value longer than `max` bytes is stored as a small header
//! under its own key and its bytes as `ceil(len / max)` chunks under keys of their own, all
//! in the same atomic batch; reads put it back together. Everything then lives in sled's
//! single log file, which the store fdatasyncs at every commit. Values of `max` bytes or
//! fewer are stored as they are, at no cost.
//!
//! | key                                      | value                                   |
//! |------------------------------------------|-----------------------------------------|
//! | `{key}`                                  | header: `FF 'C' 01`, chunks u32 BE, length u64 BE |
//! | `FF {key length u32 BE} {key} {i u32 BE}`| chunk `i`                               |
//! | `FE {key}`                               | chunk count u32 BE (read at open)       |
//!
//! A header cannot be mistaken for a plain value: every other value is UTF-8 (JSON, ids),
//! empty, or a big-endian number of a few bytes, and UTF-8 never contains the byte `FF`.
//! Other keys start with an ASCII letter, so prefix scans never meet `FE`/`FF` keys. The
//! `FE` index lets an overwrite or a removal of a chunked key drop its old chunks without
//! reading anything: the set of chunked keys is loaded once at open and kept in memory
//! (only large values are in it).

use super::Kv;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// Largest value stored unsplit: 17 of them (a full leaf node) with their keys stay well
/// under sled's 131,052-byte blob threshold.
pub const DEFAULT_CHUNK: usize = 6 * 1024;

const HEADER_TAG: [u8; 3] = [0xFF, b'C', 1];
const HEADER_LEN: usize = 3 + 4 + 8;

pub struct Chunked<K: Kv> {
    inner: K,
    max: usize,
    /// Every key stored in chunks, with its chunk count.
    chunked: Mutex<HashMap<Vec<u8>, u32>>,
}

fn chunk_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + key.len() + 4);
    k.push(0xFF);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn chunk_key(key: &[u8], i: u32) -> Vec<u8> {
    let mut k = chunk_prefix(key);
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn index_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(0xFE);
    k.extend_from_slice(key);
    k
}

/// `(chunks, length)` if `v` is a header.
fn header(v: &[u8]) -> Option<(u32, u64)> {
    if v.len() != HEADER_LEN || v[..3] != HEADER_TAG {
        return None;
    }
    let n = u32::from_be_bytes(v[3..7].try_into().ok()?);
    let len = u64::from_be_bytes(v[7..15].try_into().ok()?);
    Some((n, len))
}

impl<K: Kv> Chunked<K> {
    /// Wraps `inner`, splitting values longer than `max` bytes (at least 64).
    pub fn open(inner: K, max: usize) -> Result<Self> {
        let mut chunked = HashMap::new();
        inner.scan(&[0xFE], false, None, &mut |k, v| {
            if let Ok(n) = <[u8; 4]>::try_from(v) {
                chunked.insert(k[1..].to_vec(), u32::from_be_bytes(n));
            }
            true
        })?;
        Ok(Chunked {
            inner,
            max: max.max(64),
            chunked: Mutex::new(chunked),
        })
    }

    pub fn inner(&self) -> &K {
        &self.inner
    }

    /// The value a stored one stands for: itself, or its chunks put together.
    fn assemble(&self, key: &[u8], v: &[u8]) -> Result<Vec<u8>> {
        let Some((n, len)) = header(v) else {
            return Ok(v.to_vec());
        };
        let mut out = Vec::with_capacity(len as usize);
        let prefix = chunk_prefix(key);
        let mut next = 0u32;
        let mut bad = false;
        self.inner.scan(&prefix, false, None, &mut |k, c| {
            let idx = k[prefix.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX);
            if idx != next {
                bad = true;
                return false;
            }
            next += 1;
            out.extend_from_slice(c);
            next < n
        })?;
        if bad || next != n || out.len() as u64 != len {
            return Err(Error::Store(format!(
                "corrupt store: the value of key {:?} lost chunks ({next} of {n}, {} of {len} bytes)",
                String::from_utf8_lossy(key),
                out.len()
            )));
        }
        Ok(out)
    }
}

impl<K: Kv> Kv for Chunked<K> {
    fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut chunked = self
            .chunked
            .lock()
            .map_err(|_| Error::Internal("chunk index lock poisoned".into()))?;
        // Changes to the set of chunked keys, made ours once the batch is applied.
        let mut changed: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut out = Vec::with_capacity(ops.len());
        for (k, v) in ops {
            let old = changed
                .get(&k)
                .copied()
                .or_else(|| chunked.get(&k).copied())
                .unwrap_or(0);
            let new = match &v {
                Some(v) if v.len() > self.max => v.len().div_ceil(self.max) as u32,
                _ => 0,
            };
            for i in new..old {
                out.push((chunk_key(&k, i), None));
            }
            match v {
                Some(v) if new > 0 => {
                    for (i, c) in v.chunks(self.max).enumerate() {
                        out.push((chunk_key(&k, i as u32), Some(c.to_vec())));
                    }
                    let mut h = HEADER_TAG.to_vec();
                    h.extend_from_slice(&new.to_be_bytes());
                    h.extend_from_slice(&(v.len() as u64).to_be_bytes());
                    out.push((index_key(&k), Some(new.to_be_bytes().to_vec())));
                    out.push((k.clone(), Some(h)));
                }
                v => {
                    if old > 0 {
                        out.push((index_key(&k), None));
                    }
                    out.push((k.clone(), v));
                }
            }
            if new != old {
                changed.insert(k, new);
            }
        }
        self.inner.apply(out)?;
        for (k, n) in changed {
            if n == 0 {
                chunked.remove(&k);
            } else {
                chunked.insert(k, n);
            }
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.inner.get(key)? {
            Some(v) if header(&v).is_some() => Ok(Some(self.assemble(key, &v)?)),
            other => Ok(other),
        }
    }

    fn scan(
        &self,
        prefix: &[u8],
        reverse: bool,
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let mut err = None;
        self.inner.scan(prefix, reverse, start, &mut |k, v| {
            if header(v).is_none() {
                return visit(k, v);
            }
            match self.assemble(k, v) {
                Ok(whole) => visit(k, &whole),
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        })?;
        err.map_or(Ok(()), Err)
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemKv;

    fn all(kv: &MemKv) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        kv.scan(b"", false, None, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        out
    }

    fn big(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn small_values_are_stored_as_they_are() {
        let c = Chunked::open(MemKv::new(), 100).unwrap();
        c.apply(vec![(b"r/a".to_vec(), Some(vec![b'x'; 100]))])
            .unwrap();
        assert_eq!(all(c.inner()), vec![(b"r/a".to_vec(), vec![b'x'; 100])]);
        assert_eq!(c.get(b"r/a").unwrap(), Some(vec![b'x'; 100]));
    }

    #[test]
    fn a_large_value_round_trips_through_get_and_scan_with_no_item_over_the_limit() {
        let c = Chunked::open(MemKv::new(), 100).unwrap();
        let v = big(1_000, 7);
        c.apply(vec![
            (b"r/a".to_vec(), Some(v.clone())),
            (b"r/b".to_vec(), Some(b"small".to_vec())),
        ])
        .unwrap();
        assert!(all(c.inner()).iter().all(|(_, v)| v.len() <= 100));
        assert_eq!(c.get(b"r/a").unwrap(), Some(v.clone()));
        let mut seen = Vec::new();
        c.scan(b"r/", false, None, &mut |k, val| {
            seen.push((k.to_vec(), val.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"r/a".to_vec(), v.clone()),
                (b"r/b".to_vec(), b"small".to_vec())
            ]
        );
        let mut rev = Vec::new();
        c.scan(b"r/", true, None, &mut |k, _| {
            rev.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(rev, vec![b"r/b".to_vec(), b"r/a".to_vec()]);
    }

    #[test]
    fn overwrites_and_removals_leave_no_chunk_behind() {
        let kv = std::sync::Arc::new(MemKv::new());
        let c = Chunked::open(Shared(kv.clone()), 100).unwrap();
        c.apply(vec![(b"x/a".to_vec(), Some(big(1_000, 1)))])
            .unwrap();
        // Shorter chunked value, then a small one, then gone; each step leaves only its own.
        c.apply(vec![(b"x/a".to_vec(), Some(big(250, 2)))]).unwrap();
        assert_eq!(c.get(b"x/a").unwrap(), Some(big(250, 2)));
        assert_eq!(all(&kv).len(), 1 + 3 + 1); // key, 3 chunks, index
        c.apply(vec![(b"x/a".to_vec(), Some(b"tiny".to_vec()))])
            .unwrap();
        assert_eq!(all(&kv), vec![(b"x/a".to_vec(), b"tiny".to_vec())]);
        c.apply(vec![(b"x/a".to_vec(), Some(big(1_000, 3)))])
            .unwrap();
        c.apply(vec![(b"x/a".to_vec(), None)]).unwrap();
        assert!(all(&kv).is_empty());
    }

    #[test]
    fn the_set_of_chunked_keys_survives_a_reopen() {
        let kv = std::sync::Arc::new(MemKv::new());
        {
            let c = Chunked::open(Shared(kv.clone()), 100).unwrap();
            c.apply(vec![(b"s/a".to_vec(), Some(big(1_000, 4)))])
                .unwrap();
        }
        let c = Chunked::open(Shared(kv.clone()), 100).unwrap();
        assert_eq!(c.get(b"s/a").unwrap(), Some(big(1_000, 4)));
        c.apply(vec![(b"s/a".to_vec(), None)]).unwrap();
        assert!(all(&kv).is_empty());
    }

    #[test]
    fn two_writes_of_one_key_in_one_batch_keep_the_last() {
        let kv = std::sync::Arc::new(MemKv::new());
        let c = Chunked::open(Shared(kv.clone()), 100).unwrap();
        c.apply(vec![
            (b"x/a".to_vec(), Some(big(1_000, 5))),
            (b"x/a".to_vec(), Some(big(150, 6))),
        ])
        .unwrap();
        assert_eq!(c.get(b"x/a").unwrap(), Some(big(150, 6)));
        assert_eq!(all(&kv).len(), 1 + 2 + 1);
    }

    #[test]
    fn a_missing_chunk_is_a_store_error_not_a_short_value() {
        let kv = std::sync::Arc::new(MemKv::new());
        let c = Chunked::open(Shared(kv.clone()), 100).unwrap();
        c.apply(vec![(b"r/a".to_vec(), Some(big(1_000, 8)))])
            .unwrap();
        kv.apply(vec![(chunk_key(b"r/a", 4), None)]).unwrap();
        assert_eq!(c.get(b"r/a").unwrap_err().code(), "E_STORE");
    }

    struct Shared(std::sync::Arc<MemKv>);
    impl Kv for Shared {
        fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
            self.0.apply(ops)
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.0.get(key)
        }
        fn scan(
            &self,
            prefix: &[u8],
            reverse: bool,
            start: Option<&[u8]>,
            visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<()> {
            self.0.scan(prefix, reverse, start, visit)
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn location(&self) -> String {
            "memory".into()
        }
    }
}
