//! The embedded on-disk backend: one sled tree (a sled batch is atomic only within one
//! tree). `sync` is sled's `flush` followed by an `fdatasync` of the data file, because sled
//! 0.34 flushes with `sync_file_range`, which survives a process crash but not a power loss.
//! Values are kept small enough that sled never writes a blob file (`chunk.rs`), so that
//! data file is the only file whose contents an acknowledgement depends on.
//!
//! A folder is only ever opened as a store if durably made it: a new store gets a marker
//! file (`durably-store.json`) before sled creates anything, and a folder holding anything
//! else is refused with `E_NOT_A_STORE`, writing nothing. Opening never panics: sled's
//! recovery panics on some damaged logs; that becomes `E_STORE`, and a failed open holds
//! nothing (the folder can be opened again at once).

use super::Kv;
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The marker of a durably store, and what it says.
pub const MARKER: &str = "durably-store.json";
const MARKER_TEXT: &str = "{\"store\":\"durably\",\"backend\":\"sled\",\"format\":1}\n";

/// sled's cache bounds: below 1 MiB it thrashes; above 1 TiB is a typo.
pub const MIN_CACHE_BYTES: u64 = 1 << 20;
pub const MAX_CACHE_BYTES: u64 = 1 << 40;

#[derive(Default)]
struct Dirs {
    /// Folders open in this process: a second open of one fails at once.
    open: HashSet<PathBuf>,
    /// When a folder of ours was last closed. sled releases its file lock from its own I/O
    /// threads a moment after the handle is dropped, so an open right after a close of ours
    /// may find the lock still taken: only then is it worth waiting for it.
    closed: HashMap<PathBuf, Instant>,
}

fn dirs() -> &'static Mutex<Dirs> {
    static DIRS: OnceLock<Mutex<Dirs>> = OnceLock::new();
    DIRS.get_or_init(Default::default)
}

/// How long an open waits for the lock of a folder this process just closed.
const LOCK_GRACE: Duration = Duration::from_secs(2);

/// A folder registered as open in this process; unregistered when dropped (also when an
/// open fails halfway).
struct Registration(PathBuf);

impl Registration {
    fn take(dir: &Path) -> Result<Self> {
        let mut d = dirs()
            .lock()
            .map_err(|_| Error::Internal("data folder registry poisoned".into()))?;
        if !d.open.insert(dir.to_path_buf()) {
            return Err(Error::DataDirLocked {
                path: dir.to_path_buf(),
                here: true,
            });
        }
        Ok(Registration(dir.to_path_buf()))
    }

    fn closed_recently(&self) -> bool {
        dirs()
            .lock()
            .ok()
            .and_then(|d| d.closed.get(&self.0).copied())
            .is_some_and(|at| at.elapsed() < LOCK_GRACE)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut d) = dirs().lock() {
            d.open.remove(&self.0);
            d.closed.retain(|_, at| at.elapsed() < LOCK_GRACE);
            d.closed.insert(self.0.clone(), Instant::now());
        }
    }
}

pub struct SledKv {
    db: sled::Db,
    data_file: File,
    dir: PathBuf,
    _registration: Registration,
}

/// What a folder holds before it is opened.
enum Found {
    /// A durably store (its marker).
    Store,
    /// Nothing: a new store.
    Empty,
    /// sled's files without a marker: a store of durably 0.1 (checked once open).
    Unmarked,
}

fn not_a_store(dir: &Path, why: impl Into<String>) -> Error {
    Error::NotAStore {
        path: dir.to_path_buf(),
        reason: why.into(),
    }
}

fn inspect(dir: &Path) -> Result<Found> {
    let io = |e: std::io::Error| {
        Error::Store(format!(
            "cannot read the data folder {}: {e}",
            dir.display()
        ))
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        names.push(
            entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    if names.iter().any(|n| n == MARKER) {
        let text = std::fs::read_to_string(dir.join(MARKER)).map_err(io)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| not_a_store(dir, format!("its {MARKER} is not durably's")))?;
        if v.get("store").and_then(|s| s.as_str()) != Some("durably")
            || v.get("backend").and_then(|s| s.as_str()) != Some("sled")
        {
            return Err(not_a_store(dir, format!("its {MARKER} is not durably's")));
        }
        let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format > 1 {
            return Err(Error::SchemaTooNew {
                path: dir.display().to_string(),
                found: format as u32,
                supported: 1,
            });
        }
        return Ok(Found::Store);
    }
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    if names.iter().any(|n| n == "db") && names.iter().any(|n| n == "conf") {
        return Ok(Found::Unmarked);
    }
    names.sort();
    names.truncate(5);
    Err(not_a_store(
        dir,
        format!(
            "it holds other files ({}) and no {MARKER}",
            names.join(", ")
        ),
    ))
}

/// Writes the marker durably: a temporary file, fsync, rename, fsync of the folder.
fn write_marker(dir: &Path) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::Store(format!(
            "cannot write to the data folder {}: {e}",
            dir.display()
        ))
    };
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(MARKER_TEXT.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, dir.join(MARKER)).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic inside sled".into())
}

impl SledKv {
    /// Opens (creating) the store in `dir`. A folder already open in this process or another
    /// one fails with `E_DATA_DIR_LOCKED`, naming the folder; a folder that is not a durably
    /// store fails with `E_NOT_A_STORE`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        if !(MIN_CACHE_BYTES..=MAX_CACHE_BYTES).contains(&cache_bytes) {
            return Err(Error::bad_option(
                "cacheBytes",
                format!("must be from {MIN_CACHE_BYTES} (1 MiB) to {MAX_CACHE_BYTES} (1 TiB), got {cache_bytes}"),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Store(format!(
                "cannot create the data folder {}: {e}",
                dir.display()
            ))
        })?;
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let registration = Registration::take(&dir)?;
        let found = inspect(&dir)?;
        if let Found::Empty = found {
            write_marker(&dir)?;
        }
        let started = Instant::now();
        let db = loop {
            let opened = std::panic::catch_unwind(|| {
                sled::Config::new()
                    .path(&dir)
                    .cache_capacity(cache_bytes)
                    // sled's flusher thread is also its garbage collector: it relocates the
                    // live items of mostly-dead log segments so they can be reused. Without
                    // it (`None`), nothing reclaims space and the file grows with every
                    // write, whatever retention removes (7× the live data after 6 minutes of
                    // the soak). Its extra syncs only make more data durable sooner; every
                    // acknowledgement still waits for our own flush + fdatasync.
                    .flush_every_ms(Some(500))
                    .open()
            });
            match opened {
                Ok(Ok(db)) => break db,
                Ok(Err(sled::Error::Io(io)))
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    if !registration.closed_recently() || started.elapsed() >= LOCK_GRACE {
                        return Err(Error::DataDirLocked {
                            path: dir,
                            here: false,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(Err(sled::Error::Io(io))) if crate::error::is_full(&io) => {
                    return Err(Error::DiskFull(format!(
                        "cannot open the store in {}: {io}",
                        dir.display()
                    )))
                }
                Ok(Err(other)) => {
                    return Err(Error::Store(format!(
                        "cannot open the store in {}: {other}; if the disk is fine, the files may be damaged: restore the folder from a backup",
                        dir.display()
                    )))
                }
                Err(panic) => {
                    return Err(Error::Store(format!(
                        "cannot open the store in {}: its files are damaged ({}); restore the folder from a backup",
                        dir.display(),
                        panic_text(panic)
                    )))
                }
            }
        };
        if let Found::Unmarked = found {
            // A store of durably 0.1 has its schema key; an empty sled store is new. Anything
            // else is somebody else's sled database: leave it alone.
            let ours = db.contains_key(b"m/schema").unwrap_or(false);
            if !ours && !db.is_empty() {
                return Err(not_a_store(
                    &dir,
                    "it is a sled database that durably did not write",
                ));
            }
            write_marker(&dir)?;
        }
        let data_file = File::open(dir.join("db"))?;
        Ok(SledKv {
            db,
            data_file,
            dir,
            _registration: registration,
        })
    }
}

impl Kv for SledKv {
    fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        reverse: bool,
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if reverse {
            let iter = match start {
                Some(s) => self.db.range(prefix.to_vec()..s.to_vec()),
                None => self.db.scan_prefix(prefix),
            };
            for item in iter.rev() {
                let (k, v) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                if !visit(&k, &v) {
                    break;
                }
            }
        } else {
            let iter = match start {
                Some(s) => self.db.range(s.to_vec()..),
                None => self.db.scan_prefix(prefix),
            };
            for item in iter {
                let (k, v) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                if !visit(&k, &v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(())
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}
