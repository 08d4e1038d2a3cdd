//! The portable backend: `pwrite(2)` for appends, `fdatasync(2)` for syncs.

use std::{fs::File, io, os::unix::fs::FileExt, path::Path, sync::Arc};

use super::{Disk, DiskFile};

/// Real files written with `pwrite`.
#[derive(Debug, Default)]
pub(crate) struct PwriteDisk;

impl Disk for PwriteDisk {
    fn name(&self) -> &'static str {
        "pwrite"
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        super::list_std(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(PwriteFile(super::open_std(path, create)?)))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        super::sync_dir_std(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<super::DirLock> {
        super::lock_dir_std(dir)
    }
}

/// A real file; also the read side of every real backend.
pub(crate) struct PwriteFile(pub(crate) File);

impl DiskFile for PwriteFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (Vec<u8>, io::Result<()>) {
        let result = self.0.write_all_at(&buf, pos);
        (buf, result)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn std_file(&self) -> Option<&File> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_of_a_real_file_starts_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = PwriteDisk.open(&dir.path().join("f"), true).unwrap();
        let (_, written) = file.write_all_at(vec![5u8; 256 << 10], 0);
        written.unwrap();
        file.start_writeback(0, 128 << 10).unwrap();
        file.start_writeback(128 << 10, 256 << 10).unwrap();
        // A range past the end is no error either (the kernel has nothing to write there).
        file.start_writeback(256 << 10, 512 << 10).unwrap();
        let mut back = vec![0u8; 256 << 10];
        file.read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 5));
        file.sync_data().unwrap();
    }
}
