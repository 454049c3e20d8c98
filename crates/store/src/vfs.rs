//! The file-system seam of the shard logs. Every file and directory operation of the logs goes
//! through [`Vfs`] (paths: open, read, list, rename, remove, sync a directory) and [`VfsFile`]
//! (an open file: `pread`, `pwrite`, truncate, `fdatasync`): segment files, index files, the
//! `ACKED` and `TRIM` markers, their `*.tmp` files and the shard directories. The catalog is
//! not behind it (redb has its own seam, `redb::StorageBackend`), nor are `LOCK` and the
//! disk-usage walk of [`crate::Store`].
//!
//! The production implementation, [`StdFs`], is the operating system's file system, call for
//! call what the store did before the seam existed. Tests put an in-memory file system behind
//! it that keeps the page cache and the disk apart, drops what was not synced when it
//! simulates a crash, and fails chosen operations (`crates/store/tests/fault_fs`;
//! `docs/storage-format.md` §8).
//!
//! Cost: the logs hold their open files as `Arc<dyn VfsFile>` and the file system as
//! `Arc<dyn Vfs>`. An append round makes one dynamic call per `pwrite` and per `fdatasync`,
//! never one per byte, and nothing is copied on the way: the committer's buffer is handed to
//! `pwrite` as it was before.

use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How [`Vfs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading and writing (`O_RDWR`).
    ReadWrite,
    /// A new file, for reading and writing; an error if the name exists
    /// (`O_RDWR | O_CREAT | O_EXCL`).
    CreateNew,
    /// A file for writing, created if missing and emptied if not
    /// (`O_WRONLY | O_CREAT | O_TRUNC`).
    Truncate,
}

/// What [`Vfs::metadata`] tells about a path (a symbolic link is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfsMetadata {
    /// A regular file.
    pub is_file: bool,
    /// A directory.
    pub is_dir: bool,
    /// Length in bytes.
    pub len: u64,
}

/// An open file of a shard log. Positional I/O only: the file has no cursor, so readers and
/// the committer can share one handle.
pub trait VfsFile: Send + Sync + Debug {
    /// Fills `buf` from `offset` on (`pread` until full); an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (`pwrite` until done). On an error a prefix of `buf`
    /// may have been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes (`ftruncate`).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and all its metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// The file's current length in bytes.
    fn file_len(&self) -> io::Result<u64>;
}

/// The file system of the shard logs (see the module documentation).
pub trait Vfs: Send + Sync + Debug {
    /// Opens the file at `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// What `path` is, without following a symbolic link.
    fn metadata(&self, path: &Path) -> io::Result<VfsMetadata>;
    /// Whether `path` exists; an error if that cannot be told.
    fn try_exists(&self, path: &Path) -> io::Result<bool>;
    /// The names in the directory `path`, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Creates the directory `path` and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` (both in the same directory), replacing `to` if it is a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes the directory `path` and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals of names in the directory `path` durable
    /// (`fsync` of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// The operating system's file system: the production [`Vfs`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl StdFs {
    /// The real file system as the shared handle the logs keep.
    pub fn shared() -> Arc<dyn Vfs> {
        Arc::new(StdFs)
    }
}

/// An open file of [`StdFs`]: each call is the one system call it names.
#[derive(Debug)]
struct StdFile(File);

impl VfsFile for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Vfs for StdFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
            OpenMode::Truncate => o.write(true).create(true).truncate(true),
        };
        Ok(Arc::new(StdFile(o.open(path)?)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn metadata(&self, path: &Path) -> io::Result<VfsMetadata> {
        let m = path.symlink_metadata()?;
        Ok(VfsMetadata {
            is_file: m.is_file(),
            is_dir: m.is_dir(),
            len: m.len(),
        })
    }
    fn try_exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}
