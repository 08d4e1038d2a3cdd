//! The harness every engine test runs through: one scenario, every backend.
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use ringlog_engine::{Backend, Config, Log, SimDisk};

/// One backend under test, with a directory it owns.
pub struct Fixture {
    pub name: &'static str,
    pub config: Config,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn open(&self) -> Log {
        Log::open(&self.dir, self.config.clone()).unwrap_or_else(|e| panic!("[{}] open: {e}", self.name))
    }

    pub fn open_with(&self, change: impl FnOnce(&mut Config)) -> ringlog_engine::Result<Log> {
        let mut config = self.config.clone();
        change(&mut config);
        Log::open(&self.dir, config)
    }

    /// The simulated disk, for fixtures that use one.
    pub fn sim(&self) -> Option<SimDisk> {
        match &self.config.backend {
            Backend::Simulated(sim) => Some(sim.clone()),
            _ => None,
        }
    }

    /// Reads a file of the log, whatever the backend.
    pub fn read_file(&self, name: &str) -> Vec<u8> {
        let path = self.dir.join(name);
        match self.sim() {
            Some(sim) => sim.read_file(&path).unwrap_or_else(|| panic!("[{}] no file {name}", self.name)),
            None => std::fs::read(&path).unwrap(),
        }
    }

    /// Replaces a file of the log, whatever the backend.
    pub fn write_file(&self, name: &str, bytes: Vec<u8>) {
        let path = self.dir.join(name);
        match self.sim() {
            Some(sim) => sim.write_file(&path, bytes),
            None => std::fs::write(&path, bytes).unwrap(),
        }
    }

    pub fn remove_file(&self, name: &str) {
        let path = self.dir.join(name);
        match self.sim() {
            Some(sim) => assert!(sim.delete_file(&path), "[{}] no file {name}", self.name),
            None => std::fs::remove_file(&path).unwrap(),
        }
    }

    /// A copy of the log's files as they are now, in the page cache (what a process killed
    /// at this moment leaves), for a fixture of the same backend: the log stays open here.
    pub fn copy_as_if_killed(&self) -> Fixture {
        let mut config = self.config.clone();
        let (dir, temp) = match self.sim() {
            Some(sim) => {
                let copy = SimDisk::new();
                for path in sim.paths() {
                    copy.write_file(&path, sim.read_file(&path).unwrap());
                }
                config.backend = Backend::Simulated(copy);
                (self.dir.clone(), None)
            }
            None => {
                let temp = tempfile::tempdir().unwrap();
                let dir = temp.path().join("log");
                std::fs::create_dir(&dir).unwrap();
                for name in self.file_names() {
                    std::fs::copy(self.dir.join(&name), dir.join(&name)).unwrap();
                }
                (dir, Some(temp))
            }
        };
        Fixture { name: self.name, config, dir, _temp: temp }
    }

    /// The log's files, without the lock file of the real backends.
    pub fn file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match self.sim() {
            Some(sim) => {
                sim.paths().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
            }
            None => std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
        };
        names.retain(|name| name != "LOCK");
        names.sort();
        names
    }
}

/// Every backend available on this machine: pwrite, io_uring (when the kernel allows
/// it) and the simulated disk, each with `change` applied to the default config.
pub fn fixtures(change: impl Fn(&mut Config)) -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    let mut backends: Vec<(&'static str, Backend)> = vec![("pwrite", Backend::Pwrite)];
    if io_uring_available() {
        backends.push(("io_uring", Backend::IoUring));
    }
    backends.push(("simulated", Backend::Simulated(SimDisk::new())));
    for (name, backend) in backends {
        let mut config = Config { backend, ..Config::default() };
        change(&mut config);
        // Tiny segments (to test rolling) cannot hold a default 1 MiB record: shrink the
        // record limit to what one segment holds.
        let fits = config.store_bytes_max.saturating_sub(32 + 32);
        config.record_bytes_max = config.record_bytes_max.min(fits as u32);
        let (dir, temp) = match config.backend {
            Backend::Simulated(_) => (PathBuf::from("/sim/log"), None),
            _ => {
                let temp = tempfile::tempdir().unwrap();
                (temp.path().join("log"), Some(temp))
            }
        };
        fixtures.push(Fixture { name, config, dir, _temp: temp });
    }
    fixtures
}

/// Whether this kernel lets the io_uring backend open (CI containers may forbid it).
pub fn io_uring_available() -> bool {
    let dir = tempfile::tempdir().unwrap();
    match Log::open(dir.path(), Config { backend: Backend::IoUring, ..Config::default() }) {
        Ok(log) => {
            log.close().unwrap();
            true
        }
        Err(ringlog_engine::Error::InvalidConfig(why)) => {
            eprintln!("io_uring backend not tested here: {why}");
            false
        }
        Err(other) => panic!("opening with io_uring failed unexpectedly: {other}"),
    }
}

pub fn value(i: u64, len: usize) -> Bytes {
    let mut v = format!("record-{i}-").into_bytes();
    v.resize(len.max(v.len()), b'a' + (i % 26) as u8);
    Bytes::from(v)
}

pub fn store_name(base: u64) -> String {
    format!("{base:020}.store")
}

pub fn index_name(base: u64) -> String {
    format!("{base:020}.index")
}
pub mod model;
