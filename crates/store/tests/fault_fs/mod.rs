//! An in-memory file system for the shard logs (`streamcell_store::vfs`) that keeps the page
//! cache and the disk apart and fails chosen operations, for tests. (It is the idea of redb's
//! crash and fuzz tests with a fault-injecting `StorageBackend`, written for a whole directory
//! tree.)
//!
//! The model:
//! - **Files.** A write or truncation changes the file's cached bytes at once (every later read
//!   sees it) and is queued as *pending*. `fdatasync`/`fsync` applies the pending changes, in
//!   order, to the file's *disk* bytes.
//! - **Directories.** Creating, renaming and removing a name changes the directory's cached
//!   entries at once and is queued as pending in that directory; `fsync` of the directory
//!   applies them to its disk entries. A file's data and its name are durable separately: a
//!   synced file whose creation was never synced in its directory is gone after a crash.
//! - **A crash** ([`FaultFs::crash`]): every file and directory keeps what is on its disk plus
//!   a prefix of its pending changes ([`Keep`]: none, or a random number of them, the last one
//!   of a file possibly torn: only a prefix of its bytes), then the cache is the disk. Handles
//!   and views of the crashed "process" fail with EIO from then on.
//! - **A process kill** ([`FaultFs::kill`]): the cache (and what is pending) survives; only the
//!   handles and views of the old process stop working.
//! - **A failed `fsync` of a file** (the fsyncgate behaviour of Linux): a random prefix of the
//!   pending writes reaches the disk, the contents of the others are dropped (the cache still
//!   shows them, but no later `fsync` writes them: they reach the disk only if written again),
//!   and the call returns EIO. The file's length is metadata and is kept: truncations happen,
//!   and a dropped write that made the file longer leaves zeros there. **Of a directory:** a random prefix reaches the disk and the others stay pending, in
//!   order (file systems journal their metadata in order, and one that cannot commit its journal
//!   stops writing metadata altogether: ext4 remounts read-only, XFS shuts down).
//! - **Faults** ([`Fault`]): an operation of a kind, on a kind of file, after skipping some
//!   matching operations, fails a number of times: EIO, ENOSPC, EMFILE, or a short write (a
//!   random proper prefix of the bytes lands in the cache, then ENOSPC).
//!
//! - **A death in the middle** ([`FaultFs::doom`]): the process dies, or the power fails, at
//!   its n-th file operation from now (that operation fails, as every later one of the
//!   process), wherever that is: in a roll, a recovery, a trim, a shutdown.
//! - **A gate** ([`FaultFs::close_gate`]): the next file operation, from whatever thread, waits
//!   until the test opens the gate again. A test uses it to hold a committer in a round while
//!   it queues what the next round is to hold, so that group commit forms the same rounds every
//!   run.
//!
//! Not modelled: bit rot and misdirected writes (the fuzz targets cover damaged bytes), writes
//! of one file reaching the disk out of order (a crash keeps a prefix), and hard links.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use streamcell_store::vfs::{OpenMode, Vfs, VfsFile, VfsMetadata};

/// An operation that a [`Fault`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp {
    /// Opening or creating a file.
    Open,
    /// Reading a file (`pread` or a whole-file read).
    Read,
    /// `pwrite`.
    Write,
    /// `ftruncate`.
    SetLen,
    /// `fdatasync`/`fsync` of a file.
    Sync,
    /// `fsync` of a directory.
    SyncDir,
    /// Renaming.
    Rename,
    /// Removing a file or directory.
    Remove,
    /// Listing a directory.
    ReadDir,
    /// Creating directories.
    CreateDir,
}

/// Which files a [`Fault`] applies to, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any file or directory.
    Any,
    /// Segment files (`*.log`).
    Segment,
    /// Index files (`*.idx`).
    Index,
    /// `ACKED`.
    Marker,
    /// `TRIM`.
    Trim,
    /// Temporary files (`*.tmp`).
    Tmp,
    /// Directories.
    Dir,
}

impl Target {
    fn matches(self, path: &Path, is_dir: bool) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match self {
            Target::Any => true,
            Target::Dir => is_dir,
            Target::Segment => !is_dir && name.ends_with(".log"),
            Target::Index => !is_dir && name.ends_with(".idx"),
            Target::Marker => !is_dir && name == "ACKED",
            Target::Trim => !is_dir && name == "TRIM",
            Target::Tmp => !is_dir && name.ends_with(".tmp"),
        }
    }
}

/// How a faulted operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// EIO.
    Io,
    /// ENOSPC (a write writes nothing).
    NoSpace,
    /// EMFILE.
    TooManyFiles,
    /// For a write: a random proper prefix of the bytes is written, then ENOSPC. Otherwise EIO.
    Short,
}

/// An armed fault: the next `times` operations `op` on `target` fail with `effect`, after
/// `skip` matching operations went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The operation.
    pub op: FsOp,
    /// The files.
    pub target: Target,
    /// Matching operations that succeed first.
    pub skip: u32,
    /// How many matching operations fail then.
    pub times: u32,
    /// How they fail.
    pub effect: Effect,
}

/// How a doomed process ends ([`FaultFs::doom`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// The process is killed: the page cache survives.
    Kill,
    /// The machine loses power.
    PowerLoss(Keep),
}

/// What a crash keeps of the changes that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: the disk as the last syncs left it.
    Nothing,
    /// A random prefix of each file's and directory's pending changes, a file's last one
    /// possibly torn.
    RandomPrefix,
}

type Ino = u64;
const ROOT: Ino = 1;

#[derive(Debug, Clone)]
enum FileChange {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl FileChange {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            FileChange::Write { offset, bytes } => write_into(data, *offset, bytes),
            FileChange::SetLen(len) => data.resize(*len as usize, 0),
        }
    }

    /// What is left of the change when a failed `fsync` drops its data: the length.
    fn apply_length(&self, data: &mut Vec<u8>) {
        match self {
            FileChange::Write { offset, bytes } => {
                let end = *offset as usize + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
            }
            FileChange::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    let end = offset + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(bytes);
}

#[derive(Debug, Clone)]
enum DirChange {
    Link(OsString, Ino),
    Unlink(OsString),
    Rename(OsString, OsString),
}

impl DirChange {
    fn apply(&self, entries: &mut BTreeMap<OsString, Ino>) {
        match self {
            DirChange::Link(name, ino) => {
                entries.insert(name.clone(), *ino);
            }
            DirChange::Unlink(name) => {
                entries.remove(name);
            }
            DirChange::Rename(from, to) => {
                // A rename whose source never reached the disk changes nothing there.
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct FileNode {
    cache: Vec<u8>,
    disk: Vec<u8>,
    pending: Vec<FileChange>,
}

#[derive(Debug, Default)]
struct DirNode {
    cache: BTreeMap<OsString, Ino>,
    disk: BTreeMap<OsString, Ino>,
    pending: Vec<DirChange>,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// splitmix64: small, seedable, good enough to choose prefixes.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=n`.
    fn upto(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }
}

#[derive(Debug)]
struct State {
    /// The running "process": views and handles of an older one fail.
    epoch: u64,
    /// Ordered, so that a crash draws its random choices in the same order every run.
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    rng: Rng,
    faults: Vec<Fault>,
    suspended: bool,
    /// The process dies at its next operation once the count reaches zero.
    doom: Option<(u32, Death)>,
    /// How the last process that died early died.
    last_death: Option<Death>,
    /// A failed sync writes a random prefix of the pending changes (else none).
    failed_sync_writes_some: bool,
    fired: Vec<String>,
    trace: bool,
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

const EIO: i32 = 5;
const ENOSPC: i32 = 28;
const EMFILE: i32 = 24;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EXDEV: i32 = 18;

impl State {
    fn check_epoch(&self, epoch: u64) -> io::Result<()> {
        if epoch == self.epoch {
            Ok(())
        } else {
            Err(io::Error::other(
                "the process that opened this file system is gone",
            ))
        }
    }

    /// Counts an operation of the running process towards its doom; true if it dies now.
    fn doomed(&mut self) -> bool {
        if self.suspended {
            return false;
        }
        match self.doom {
            Some((0, how)) => {
                self.doom = None;
                self.last_death = Some(how);
                if self.trace {
                    eprintln!("fault_fs: DEATH {how:?}");
                }
                match how {
                    Death::Kill => self.epoch += 1,
                    Death::PowerLoss(keep) => self.crash(keep),
                }
                true
            }
            Some((n, how)) => {
                self.doom = Some((n - 1, how));
                false
            }
            None => false,
        }
    }

    /// The fault that fails this operation, if one does (consuming it).
    fn fault(&mut self, op: FsOp, path: &Path, is_dir: bool) -> Option<Effect> {
        if self.suspended {
            return None;
        }
        let i = self
            .faults
            .iter()
            .position(|f| f.op == op && f.target.matches(path, is_dir))?;
        let f = &mut self.faults[i];
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        let effect = f.effect;
        f.times -= 1;
        if f.times == 0 {
            self.faults.remove(i);
        }
        let what = format!("{op:?} {} -> {effect:?}", path.display());
        if self.trace {
            eprintln!("fault_fs: FAULT {what}");
        }
        self.fired.push(what);
        Some(effect)
    }

    fn dir(&self, ino: Ino) -> io::Result<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(err(ENOTDIR)),
            None => Err(err(ENOENT)),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(err(ENOTDIR)),
            None => Err(err(ENOENT)),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(err(EISDIR)),
            None => Err(err(ENOENT)),
        }
    }

    /// The inode at `path` (absolute, as the cache shows it).
    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for c in path.components() {
            match c {
                Component::RootDir => ino = ROOT,
                Component::Normal(name) => {
                    ino = *self.dir(ino)?.cache.get(name).ok_or_else(|| err(ENOENT))?;
                }
                _ => return Err(io::Error::other(format!("unsupported path {path:?}"))),
            }
        }
        Ok(ino)
    }

    /// The directory holding `path`, and its last component.
    fn parent<'p>(&self, path: &'p Path) -> io::Result<(Ino, &'p OsStr)> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other(format!("no file name in {path:?}")))?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        let ino = self.lookup(parent)?;
        self.dir(ino)?;
        Ok((ino, name))
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes.get(&ino), Some(Node::Dir(_)))
    }

    fn new_node(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn link(&mut self, dir: Ino, name: &OsStr, ino: Ino) -> io::Result<()> {
        let d = self.dir_mut(dir)?;
        d.cache.insert(name.to_owned(), ino);
        d.pending.push(DirChange::Link(name.to_owned(), ino));
        Ok(())
    }

    /// Syncs a file or directory; with `fail`, the fsyncgate way (see the module docs).
    fn sync(&mut self, ino: Ino, fail: bool) {
        let some = self.failed_sync_writes_some;
        let keep = |rng: &mut Rng, n: usize| match (fail, some) {
            (false, _) => n,
            (true, true) => rng.upto(n),
            (true, false) => 0,
        };
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => {
                let k = keep(&mut self.rng, f.pending.len());
                for c in &f.pending[..k] {
                    c.apply(&mut f.disk);
                }
                for c in &f.pending[k..] {
                    c.apply_length(&mut f.disk);
                }
                f.pending.clear();
            }
            Some(Node::Dir(d)) => {
                let k = keep(&mut self.rng, d.pending.len());
                for c in d.pending.drain(..k) {
                    c.apply(&mut d.disk);
                }
            }
            None => {}
        }
    }

    fn crash(&mut self, keep: Keep) {
        let inos: Vec<Ino> = self.nodes.keys().copied().collect();
        for ino in inos {
            let rng = &mut self.rng;
            match self.nodes.get_mut(&ino) {
                Some(Node::File(f)) => {
                    let k = match keep {
                        Keep::Nothing => 0,
                        Keep::RandomPrefix => rng.upto(f.pending.len()),
                    };
                    for c in &f.pending[..k] {
                        c.apply(&mut f.disk);
                    }
                    if keep == Keep::RandomPrefix
                        && k < f.pending.len()
                        && rng.next().is_multiple_of(2)
                    {
                        // The next write torn: a prefix of its bytes made it.
                        if let FileChange::Write { offset, bytes } = &f.pending[k] {
                            let n = rng.upto(bytes.len());
                            write_into(&mut f.disk, *offset, &bytes[..n]);
                        }
                    }
                    f.pending.clear();
                    f.cache = f.disk.clone();
                }
                Some(Node::Dir(d)) => {
                    let k = match keep {
                        Keep::Nothing => 0,
                        Keep::RandomPrefix => rng.upto(d.pending.len()),
                    };
                    for c in &d.pending[..k] {
                        c.apply(&mut d.disk);
                    }
                    d.pending.clear();
                    d.cache = d.disk.clone();
                }
                None => {}
            }
        }
        // What no durable name reaches is gone.
        let mut reachable = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if let Some(Node::Dir(d)) = self.nodes.get(&ino) {
                for &child in d.disk.values() {
                    if reachable.insert(child) {
                        todo.push(child);
                    }
                }
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        self.epoch += 1;
    }
}

/// Where the gate is (see the module docs).
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum GateState {
    #[default]
    Open,
    /// The next operation stops here.
    Closed,
    /// An operation is waiting at it.
    Reached,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called first by every operation.
    fn pass(&self) {
        let mut g = self.lock();
        if *g != GateState::Closed {
            return;
        }
        *g = GateState::Reached;
        self.changed.notify_all();
        while *g == GateState::Reached {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The file system: one shared state, seen by one "process" at a time through [`FaultFs::view`].
#[derive(Debug, Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
}

impl FaultFs {
    /// An empty file system (just `/`); `seed` drives every random choice it makes.
    pub fn new(seed: u64) -> FaultFs {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        FaultFs {
            state: Arc::new(Mutex::new(State {
                epoch: 0,
                nodes,
                next_ino: ROOT + 1,
                rng: Rng(seed),
                faults: Vec::new(),
                suspended: false,
                doom: None,
                last_death: None,
                failed_sync_writes_some: true,
                fired: Vec::new(),
                trace: std::env::var_os("FAULT_FS_TRACE").is_some(),
            })),
            gate: Arc::default(),
        }
    }

    /// Closes the gate: the next file operation waits at it.
    pub fn close_gate(&self) {
        *self.gate.lock() = GateState::Closed;
    }

    /// Waits (up to `timeout`) until an operation waits at the closed gate; false if none came.
    pub fn gate_reached(&self, timeout: Duration) -> bool {
        let g = self.gate.lock();
        let (g, _) = self
            .gate
            .changed
            .wait_timeout_while(g, timeout, |g| *g == GateState::Closed)
            .unwrap_or_else(|p| p.into_inner());
        *g == GateState::Reached
    }

    /// Opens the gate, letting a waiting operation go on.
    pub fn open_gate(&self) {
        *self.gate.lock() = GateState::Open;
        self.gate.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file system as the current process sees it (what a `LogEnv` is given).
    pub fn view(&self) -> Arc<dyn Vfs> {
        Arc::new(View {
            state: self.state.clone(),
            gate: self.gate.clone(),
            epoch: self.lock().epoch,
        })
    }

    /// Creates `path` and its parents, durably (as if synced long ago).
    pub fn mkdir_durable(&self, path: &Path) {
        let view = View {
            state: self.state.clone(),
            gate: self.gate.clone(),
            epoch: self.lock().epoch,
        };
        view.create_dir_all(path).expect("mkdir");
        let mut st = self.lock();
        let mut ino = ROOT;
        st.sync(ROOT, false);
        for c in path.components() {
            if let Component::Normal(name) = c {
                ino = st.dir(ino).expect("dir").cache[name];
                st.sync(ino, false);
            }
        }
    }

    /// The process dies: the page cache survives, its handles do not.
    pub fn kill(&self) {
        self.lock().epoch += 1;
    }

    /// The machine loses power: see [`Keep`].
    pub fn crash(&self, keep: Keep) {
        self.lock().crash(keep);
    }

    /// The running process dies at its `after`-th file operation from now (0: the next one).
    pub fn doom(&self, after: u32, how: Death) {
        self.lock().doom = Some((after, how));
    }

    /// Disarms a doom that has not come.
    pub fn spare(&self) {
        self.lock().doom = None;
    }

    /// Which process is running (one more after each kill or crash).
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// How the last process that was doomed died.
    pub fn last_death(&self) -> Option<Death> {
        self.lock().last_death
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push(fault);
        }
    }

    /// From now on a failed sync writes none of the pending changes (by default a random
    /// prefix of them).
    pub fn failed_syncs_write_nothing(&self) {
        self.lock().failed_sync_writes_some = false;
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Whether faults are armed.
    pub fn armed(&self) -> bool {
        !self.lock().faults.is_empty()
    }

    /// Faults are not applied while `on` (a checker's reads must see the truth).
    pub fn suspend_faults(&self, on: bool) {
        self.lock().suspended = on;
    }

    /// Every fault that fired, in order.
    pub fn fired(&self) -> Vec<String> {
        self.lock().fired.clone()
    }

    /// How many faults fired.
    pub fn fired_count(&self) -> usize {
        self.lock().fired.len()
    }

    /// The cached and the durable content of the file at `path`, if it exists in the cache.
    pub fn file_states(&self, path: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut st = self.lock();
        let ino = st.lookup(path).ok()?;
        let f = st.file_mut(ino).ok()?;
        Some((f.cache.clone(), f.disk.clone()))
    }

    /// The names the directory `path` holds in the cache.
    pub fn list(&self, path: &Path) -> Vec<String> {
        let st = self.lock();
        let Ok(ino) = st.lookup(path) else {
            return Vec::new();
        };
        st.dir(ino)
            .map(|d| {
                d.cache
                    .keys()
                    .map(|k| k.to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One process's view of a [`FaultFs`].
#[derive(Debug)]
struct View {
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
    epoch: u64,
}

/// Fails the operations of a process that is gone, before they reach the gate (a late
/// operation of a dead process must not take the place of the next round's at it).
fn check_alive(state: &Mutex<State>, epoch: u64) -> io::Result<()> {
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check_epoch(epoch)
}

impl View {
    /// The state, if this view's process is still the running one.
    fn live(&self, what: &str, path: &Path) -> io::Result<MutexGuard<'_, State>> {
        check_alive(&self.state, self.epoch)?;
        self.gate.pass();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.trace {
            eprintln!("fault_fs: {what} {}", path.display());
        }
        st.check_epoch(self.epoch)?;
        if st.doomed() {
            st.check_epoch(self.epoch)?;
        }
        Ok(st)
    }
}

fn fail(effect: Effect) -> io::Error {
    match effect {
        Effect::Io | Effect::Short => err(EIO),
        Effect::NoSpace => err(ENOSPC),
        Effect::TooManyFiles => err(EMFILE),
    }
}

impl Vfs for View {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut st = self.live("open", path)?;
        if let Some(e) = st.fault(FsOp::Open, path, false) {
            return Err(fail(e));
        }
        let (dir, name) = st.parent(path)?;
        let existing = st.dir(dir)?.cache.get(name).copied();
        let ino = match (mode, existing) {
            (_, Some(ino)) if st.is_dir(ino) => return Err(err(EISDIR)),
            (OpenMode::CreateNew, Some(_)) => return Err(err(EEXIST)),
            (OpenMode::ReadWrite, None) => return Err(err(ENOENT)),
            (OpenMode::ReadWrite, Some(ino)) => ino,
            (OpenMode::Truncate, Some(ino)) => {
                let f = st.file_mut(ino)?;
                f.cache.clear();
                f.pending.push(FileChange::SetLen(0));
                ino
            }
            (OpenMode::CreateNew | OpenMode::Truncate, None) => {
                let ino = st.new_node(Node::File(FileNode::default()));
                st.link(dir, name, ino)?;
                ino
            }
        };
        Ok(Arc::new(Handle {
            state: self.state.clone(),
            gate: self.gate.clone(),
            epoch: self.epoch,
            ino,
            path: path.to_path_buf(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.live("read", path)?;
        if let Some(e) = st.fault(FsOp::Read, path, false) {
            return Err(fail(e));
        }
        let ino = st.lookup(path)?;
        Ok(st.file_mut(ino)?.cache.clone())
    }

    fn metadata(&self, path: &Path) -> io::Result<VfsMetadata> {
        let st = self.live("metadata", path)?;
        let ino = st.lookup(path)?;
        Ok(match st.nodes.get(&ino) {
            Some(Node::File(f)) => VfsMetadata {
                is_file: true,
                is_dir: false,
                len: f.cache.len() as u64,
            },
            _ => VfsMetadata {
                is_file: false,
                is_dir: true,
                len: 0,
            },
        })
    }

    fn try_exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.live("exists", path)?;
        match st.lookup(path) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut st = self.live("read_dir", path)?;
        if let Some(e) = st.fault(FsOp::ReadDir, path, true) {
            return Err(fail(e));
        }
        let ino = st.lookup(path)?;
        Ok(st.dir(ino)?.cache.keys().cloned().collect())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live("create_dir_all", path)?;
        if let Some(e) = st.fault(FsOp::CreateDir, path, true) {
            return Err(fail(e));
        }
        let mut ino = ROOT;
        for c in path.components() {
            match c {
                Component::RootDir => ino = ROOT,
                Component::Normal(name) => {
                    ino = match st.dir(ino)?.cache.get(name).copied() {
                        Some(child) if st.is_dir(child) => child,
                        Some(_) => return Err(err(EEXIST)),
                        None => {
                            let child = st.new_node(Node::Dir(DirNode::default()));
                            st.link(ino, name, child)?;
                            child
                        }
                    };
                }
                _ => return Err(io::Error::other(format!("unsupported path {path:?}"))),
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.live("rename", from)?;
        if let Some(e) = st.fault(FsOp::Rename, from, false) {
            return Err(fail(e));
        }
        let (dir, from_name) = st.parent(from)?;
        let (to_dir, to_name) = st.parent(to)?;
        if dir != to_dir {
            return Err(err(EXDEV));
        }
        let d = st.dir_mut(dir)?;
        let ino = d.cache.remove(from_name).ok_or_else(|| err(ENOENT))?;
        d.cache.insert(to_name.to_owned(), ino);
        d.pending
            .push(DirChange::Rename(from_name.to_owned(), to_name.to_owned()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live("remove_file", path)?;
        if let Some(e) = st.fault(FsOp::Remove, path, false) {
            return Err(fail(e));
        }
        let (dir, name) = st.parent(path)?;
        let ino = *st.dir(dir)?.cache.get(name).ok_or_else(|| err(ENOENT))?;
        if st.is_dir(ino) {
            return Err(err(EISDIR));
        }
        let d = st.dir_mut(dir)?;
        d.cache.remove(name);
        d.pending.push(DirChange::Unlink(name.to_owned()));
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live("remove_dir_all", path)?;
        if let Some(e) = st.fault(FsOp::Remove, path, true) {
            return Err(fail(e));
        }
        let (dir, name) = st.parent(path)?;
        let ino = *st.dir(dir)?.cache.get(name).ok_or_else(|| err(ENOENT))?;
        if !st.is_dir(ino) {
            return Err(err(ENOTDIR));
        }
        // The entries inside are unlinked too (pending in that directory), the way a
        // recursive removal unlinks them one by one.
        let inner = st.dir_mut(ino)?;
        let names: Vec<OsString> = inner.cache.keys().cloned().collect();
        for n in names {
            inner.cache.remove(&n);
            inner.pending.push(DirChange::Unlink(n));
        }
        let d = st.dir_mut(dir)?;
        d.cache.remove(name);
        d.pending.push(DirChange::Unlink(name.to_owned()));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live("sync_dir", path)?;
        let fault = st.fault(FsOp::SyncDir, path, true);
        let ino = st.lookup(path)?;
        st.dir(ino)?;
        st.sync(ino, fault.is_some());
        match fault {
            Some(e) => Err(fail(e)),
            None => Ok(()),
        }
    }
}

/// An open file of a [`View`].
#[derive(Debug)]
struct Handle {
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
    epoch: u64,
    ino: Ino,
    path: PathBuf,
}

impl Handle {
    fn live(&self, what: &str) -> io::Result<MutexGuard<'_, State>> {
        check_alive(&self.state, self.epoch)?;
        self.gate.pass();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.trace {
            eprintln!("fault_fs: {what} {}", self.path.display());
        }
        st.check_epoch(self.epoch)?;
        if st.doomed() {
            st.check_epoch(self.epoch)?;
        }
        Ok(st)
    }
}

impl VfsFile for Handle {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut st = self.live("pread")?;
        if let Some(e) = st.fault(FsOp::Read, &self.path, false) {
            return Err(fail(e));
        }
        let f = st.file_mut(self.ino)?;
        let start = offset as usize;
        let end = start + buf.len();
        if end > f.cache.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        buf.copy_from_slice(&f.cache[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.live("pwrite")?;
        let fault = st.fault(FsOp::Write, &self.path, false);
        let n = match fault {
            None => buf.len(),
            Some(Effect::Short) if !buf.is_empty() => st.rng.upto(buf.len() - 1),
            Some(_) => 0,
        };
        if n > 0 {
            let f = st.file_mut(self.ino)?;
            write_into(&mut f.cache, offset, &buf[..n]);
            f.pending.push(FileChange::Write {
                offset,
                bytes: buf[..n].to_vec(),
            });
        }
        match fault {
            None => Ok(()),
            Some(Effect::Short) => Err(err(ENOSPC)),
            Some(e) => Err(fail(e)),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.live("ftruncate")?;
        if let Some(e) = st.fault(FsOp::SetLen, &self.path, false) {
            return Err(fail(e));
        }
        let f = st.file_mut(self.ino)?;
        f.cache.resize(len as usize, 0);
        f.pending.push(FileChange::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.live("fdatasync")?;
        let fault = st.fault(FsOp::Sync, &self.path, false);
        st.sync(self.ino, fault.is_some());
        match fault {
            Some(e) => Err(fail(e)),
            None => Ok(()),
        }
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn file_len(&self) -> io::Result<u64> {
        let mut st = self.live("stat")?;
        Ok(st.file_mut(self.ino)?.cache.len() as u64)
    }
}
