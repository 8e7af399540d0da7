//! The in-memory backend: the store of `durably/testing` and of the core's tests.
//! `sync` is a no-op; a batch is atomic because it is applied under one lock.

use super::Kv;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemKv {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>>> {
        self.map
            .lock()
            .map_err(|_| Error::Internal("memory store lock poisoned".into()))
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Kv for MemKv {
    fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut map = self.lock()?;
        for (k, v) in ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        reverse: bool,
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        // Copy the matching range out so `visit` may call back into the store.
        let items: Vec<(Vec<u8>, Vec<u8>)> = {
            let map = self.lock()?;
            if reverse {
                let upper = match start {
                    Some(s) => Bound::Excluded(s.to_vec()),
                    None => match prefix_end(prefix) {
                        Some(end) => Bound::Excluded(end),
                        None => Bound::Unbounded,
                    },
                };
                map.range::<Vec<u8>, _>((Bound::Included(prefix.to_vec()), upper))
                    .rev()
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            } else {
                let lower = start.unwrap_or(prefix).to_vec();
                map.range::<Vec<u8>, _>((Bound::Included(lower), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
        };
        for (k, v) in items {
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn location(&self) -> String {
        "memory".into()
    }
}
