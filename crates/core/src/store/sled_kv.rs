//! The embedded on-disk backend: one sled tree (a sled batch is atomic only within one
//! tree). `sync` is sled's `flush` followed by an `fdatasync` of the data file, because sled
//! 0.34 flushes with `sync_file_range`, which survives a process crash but not a power loss.

use super::Kv;
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Folders open in this process: a second open of one fails at once. A folder not in here
/// whose sled lock is taken is another process's, or the lock of a handle of ours that was
/// just dropped: sled releases it from its own I/O threads a moment after the drop. So the
/// open retries for `LOCK_GRACE` before reporting the folder locked.
fn open_dirs() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

const LOCK_GRACE: Duration = Duration::from_secs(2);

fn unregister(dir: &Path) {
    if let Ok(mut open) = open_dirs().lock() {
        open.remove(dir);
    }
}

pub struct SledKv {
    db: sled::Db,
    data_file: File,
    dir: PathBuf,
}

impl SledKv {
    /// Opens (creating) the store in `dir`. A folder already open in this process or another
    /// one fails with `E_DATA_DIR_LOCKED`, naming the folder.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Store(format!(
                "cannot create the data folder {}: {e}",
                dir.display()
            ))
        })?;
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let registered = open_dirs()
            .lock()
            .map(|mut open| open.insert(dir.clone()))
            .unwrap_or(false);
        if !registered {
            return Err(Error::DataDirLocked { path: dir });
        }
        let started = Instant::now();
        let db = loop {
            let opened = sled::Config::new()
                .path(&dir)
                .cache_capacity(cache_bytes)
                .flush_every_ms(None)
                .open();
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(io))
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    if started.elapsed() >= LOCK_GRACE {
                        unregister(&dir);
                        return Err(Error::DataDirLocked { path: dir });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(other) => {
                    unregister(&dir);
                    return Err(Error::Store(format!(
                        "cannot open the store in {}: {other}",
                        dir.display()
                    )));
                }
            }
        };
        let data_file = match File::open(dir.join("db")) {
            Ok(f) => f,
            Err(e) => {
                unregister(&dir);
                return Err(e.into());
            }
        };
        Ok(SledKv { db, data_file, dir })
    }
}

impl Drop for SledKv {
    fn drop(&mut self) {
        unregister(&self.dir);
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
