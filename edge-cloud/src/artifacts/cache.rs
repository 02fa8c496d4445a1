//! The artifact files an edge holds, in `DATA_DIR/artifacts`: `<id>` once fetched and
//! verified, `<id>.part` while a fetch is under way (kept across a failure or a
//! restart, so the next fetch resumes it). The total stays under a cap by removing
//! the least recently served files first; a device in the middle of a download of a
//! removed file keeps reading it (the file lives on until it is closed).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One file in the cache.
#[derive(Debug, Clone, Copy)]
struct Held {
    size: u64,
    /// When it was last served, on the cache's own clock: lower is older.
    used: u64,
}

#[derive(Debug, Default)]
struct Index {
    files: HashMap<i64, Held>,
    total: u64,
    clock: u64,
}

impl Index {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    cap: u64,
    index: Mutex<Index>,
}

impl Cache {
    /// Opens (creating) the cache directory and indexes what is in it, oldest
    /// modification first, so the order of use survives a restart (serving a file
    /// touches its modification time).
    pub fn open(dir: &Path, cap: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let meta = entry.metadata()?;
            if meta.is_file() {
                found.push((meta.modified()?, id, meta.len()));
            }
        }
        found.sort();
        let cache = Self {
            dir: dir.to_path_buf(),
            cap,
            index: Mutex::new(Index::default()),
        };
        {
            let mut index = cache.lock();
            for (_, id, size) in found {
                let used = index.tick();
                index.files.insert(id, Held { size, used });
                index.total += size;
            }
        }
        cache.evict(None);
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes the cached files take.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Where artifact `id` is kept once fetched.
    pub fn path(&self, id: i64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Where a fetch of artifact `id` writes until the file is verified.
    pub fn part_path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    /// The file of artifact `id` and its size, if it is cached; it becomes the most
    /// recently used.
    pub fn get(&self, id: i64) -> Option<(PathBuf, u64)> {
        let mut index = self.lock();
        let used = index.tick();
        let held = index.files.get_mut(&id)?;
        held.used = used;
        Some((self.path(id), held.size))
    }

    /// Takes in a verified file just renamed into place, then removes the least
    /// recently used others until the total is within the cap.
    pub fn admit(&self, id: i64, size: u64) {
        {
            let mut index = self.lock();
            let used = index.tick();
            if let Some(old) = index.files.insert(id, Held { size, used }) {
                index.total -= old.size;
            }
            index.total += size;
        }
        self.evict(Some(id));
    }

    /// Removes the least recently used files, never `keep`, until the total fits.
    fn evict(&self, keep: Option<i64>) {
        let mut index = self.lock();
        while index.total > self.cap {
            let oldest = index
                .files
                .iter()
                .filter(|(id, _)| Some(**id) != keep)
                .min_by_key(|(_, held)| held.used)
                .map(|(id, held)| (*id, held.size));
            let Some((id, size)) = oldest else {
                return;
            };
            index.files.remove(&id);
            index.total -= size;
            match std::fs::remove_file(self.path(id)) {
                Ok(()) => tracing::info!(artifact = id, size, "artifact evicted from the cache"),
                Err(e) => {
                    tracing::warn!(artifact = id, error = %e, "removing an evicted artifact failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cache: &Cache, id: i64, size: usize) {
        std::fs::write(cache.path(id), vec![7u8; size]).expect("write");
        cache.admit(id, size as u64);
    }

    #[test]
    fn the_least_recently_served_file_goes_first_and_the_order_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(dir.path(), 300).expect("open");
        put(&cache, 1, 100);
        put(&cache, 2, 100);
        put(&cache, 3, 100);
        assert!(cache.get(1).is_some(), "1 served: 2 is now the oldest");
        put(&cache, 4, 100);
        assert!(
            cache.get(2).is_none() && !cache.path(2).exists(),
            "2 evicted"
        );
        assert_eq!(cache.total(), 300);
        for id in [1, 3, 4] {
            assert!(cache.get(id).is_some(), "{id} kept");
        }

        let smaller = Cache::open(dir.path(), 250).expect("reopen with a smaller cap");
        assert_eq!(smaller.total(), 200, "one file went to fit the new cap");
    }

    #[test]
    fn a_file_larger_than_the_cap_is_kept_alone_until_the_next_one() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(dir.path(), 100).expect("open");
        put(&cache, 1, 50);
        put(&cache, 2, 150);
        assert!(cache.get(1).is_none(), "the older file made room");
        assert!(
            cache.get(2).is_some(),
            "the new one is served though over the cap"
        );
        put(&cache, 3, 10);
        assert!(cache.get(2).is_none());
        assert_eq!(cache.total(), 10);
    }

    #[test]
    fn part_files_and_strangers_are_not_indexed() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("5.part"), b"half").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
        let cache = Cache::open(dir.path(), 100).expect("open");
        assert_eq!(cache.total(), 0);
        assert!(cache.get(5).is_none());
    }
}
