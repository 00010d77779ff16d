//! A test-only power-cut rig: a FUSE filesystem that keeps everything a
//! writer has not made durable in memory, and loses it at a "power cut".
//!
//! The model is Jepsen's LazyFS:
//!
//! - A file's written data reaches the disk only when the file is fsynced
//!   (`fsync` or `fdatasync`). Reads see everything written (the writer's
//!   own view is the full, unsynced state).
//! - A created, renamed, hard-linked or unlinked name, and a new folder,
//!   reach the disk only when their folder is fsynced.
//! - [`Rig::power_cut`] unmounts, keeps only what was synced (and, with a
//!   torn write, a seeded random prefix, in write order, of the unsynced
//!   pages of one file), writes that image to the backing folder, and
//!   mounts again from it.
//!
//! The backing folder is the disk: the mount is loaded from it, and every
//! power cut (and [`Rig::unmount`]) writes the durable image back into it,
//! so after a failure the files as the power cut left them can be read there.
//!
//! Everything else is served from memory (the stores under test are small).
//! POSIX locks are left to the kernel (the filesystem does not take them),
//! which is right for one machine. Shared `mmap` (SQLite's `-shm`) works
//! because the mount uses the page cache (no `direct_io`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// The granularity of a torn write.
pub const PAGE: u64 = 4096;
const TTL: Duration = Duration::from_secs(1);

/// The rig's only randomness: the crash tests' generator, shared by path.
#[path = "../../support/src/rng.rs"]
mod rng;
pub use rng::Rng;

#[derive(Debug)]
enum Body {
    File {
        /// What readers see.
        data: Vec<u8>,
        /// What is on the disk.
        durable: Vec<u8>,
        /// Pages written since the last fsync, in the order first written.
        dirty: Vec<u64>,
        dirty_set: BTreeSet<u64>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

#[derive(Debug)]
struct Node {
    body: Body,
    mode: u32,
    mtime: SystemTime,
}

impl Node {
    fn dirty_range(&mut self, from: u64, to: u64) {
        if let Body::File {
            dirty, dirty_set, ..
        } = &mut self.body
        {
            if to <= from {
                return;
            }
            for p in from / PAGE..=(to - 1) / PAGE {
                if dirty_set.insert(p) {
                    dirty.push(p);
                }
            }
        }
    }
}

/// What the rig counted since it was made.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub writes: u64,
    pub cuts: u64,
    /// Cuts that let some unsynced pages through.
    pub torn: u64,
    /// Unsynced pages dropped by cuts.
    pub pages_lost: u64,
    /// Unsynced names (folder entries) dropped by cuts.
    pub names_lost: u64,
}

#[derive(Debug, Default)]
struct State {
    /// A broken disk that acknowledges fsync and keeps nothing (to show
    /// that a test on the rig can fail).
    ignore_fsync: bool,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    stats: Stats,
}

impl State {
    fn load(backing: &Path) -> std::io::Result<State> {
        let mut st = State {
            ignore_fsync: false,
            nodes: HashMap::new(),
            next_ino: 2,
            stats: Stats::default(),
        };
        let root = st.load_dir(backing)?;
        let node = st.nodes.remove(&root).expect("loaded root");
        st.nodes.insert(1, node);
        Ok(st)
    }

    fn load_dir(&mut self, dir: &Path) -> std::io::Result<u64> {
        let mut entries = BTreeMap::new();
        // Hard links in the backing folder are not kept as links (no need).
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let t = e.file_type()?;
            let ino = if t.is_dir() {
                self.load_dir(&e.path())?
            } else if t.is_file() {
                let data = std::fs::read(e.path())?;
                let mode = mode_of(&e.path());
                self.add(Node {
                    body: Body::File {
                        durable: data.clone(),
                        data,
                        dirty: Vec::new(),
                        dirty_set: BTreeSet::new(),
                    },
                    mode,
                    mtime: SystemTime::now(),
                })
            } else {
                continue;
            };
            entries.insert(e.file_name(), ino);
        }
        let mode = mode_of(dir);
        Ok(self.add(Node {
            body: Body::Dir {
                durable: entries.clone(),
                entries,
            },
            mode,
            mtime: SystemTime::now(),
        }))
    }

    fn add(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.body {
            Body::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Body::Dir { .. } => (FileType::Directory, 4096, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: (n.mode & 0o7777) as u16,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn entries(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.body) {
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&mut self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, body: Body, mode: u32) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.add(Node {
            body,
            mode,
            mtime: SystemTime::now(),
        });
        self.entries(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn fsync(&mut self, ino: u64) {
        self.stats.fsyncs += 1;
        if let Some(Node {
            body:
                Body::File {
                    data,
                    durable,
                    dirty,
                    dirty_set,
                },
            ..
        }) = self.nodes.get_mut(&ino)
        {
            durable.resize(data.len(), 0);
            for p in dirty.drain(..) {
                let from = (p * PAGE) as usize;
                if from >= data.len() {
                    continue;
                }
                let to = ((p + 1) * PAGE).min(data.len() as u64) as usize;
                durable[from..to].copy_from_slice(&data[from..to]);
            }
            dirty_set.clear();
        }
    }

    /// Drops what was not synced (except a torn prefix), then returns the
    /// durable tree as it would be found after the reboot.
    fn cut(&mut self, torn: Option<&mut Rng>) {
        self.stats.cuts += 1;
        if let Some(rng) = torn {
            let candidates: Vec<u64> = {
                let mut v: Vec<u64> = self
                    .nodes
                    .iter()
                    .filter(
                        |(_, n)| matches!(&n.body, Body::File { dirty, .. } if !dirty.is_empty()),
                    )
                    .map(|(i, _)| *i)
                    .collect();
                v.sort_unstable();
                v
            };
            if !candidates.is_empty() {
                let ino = candidates[rng.below(candidates.len() as u64) as usize];
                if let Some(Node {
                    body:
                        Body::File {
                            data,
                            durable,
                            dirty,
                            ..
                        },
                    ..
                }) = self.nodes.get_mut(&ino)
                {
                    let k = rng.range(0, dirty.len() as u64) as usize;
                    if k > 0 {
                        self.stats.torn += 1;
                    }
                    for &p in &dirty[..k] {
                        let from = (p * PAGE) as usize;
                        if from >= data.len() {
                            continue;
                        }
                        let to = ((p + 1) * PAGE).min(data.len() as u64) as usize;
                        if durable.len() < to {
                            durable.resize(to, 0);
                        }
                        durable[from..to].copy_from_slice(&data[from..to]);
                    }
                    dirty.drain(..k);
                }
            }
        }
        for n in self.nodes.values_mut() {
            match &mut n.body {
                Body::File { dirty, .. } => self.stats.pages_lost += dirty.len() as u64,
                Body::Dir { entries, durable } => {
                    let changed = entries
                        .iter()
                        .filter(|(k, v)| durable.get(*k) != Some(*v))
                        .count()
                        + durable.keys().filter(|k| !entries.contains_key(*k)).count();
                    self.stats.names_lost += changed as u64;
                }
            }
        }
    }

    /// Writes the durable tree under `root` into `dir` (emptied first).
    fn write_durable(&self, dir: &Path) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        let mut seen = HashMap::new();
        self.write_dir(1, dir, &mut seen)
    }

    fn write_dir(
        &self,
        ino: u64,
        dir: &Path,
        seen: &mut HashMap<u64, PathBuf>,
    ) -> std::io::Result<()> {
        let Some(Node {
            body: Body::Dir { durable, .. },
            ..
        }) = self.nodes.get(&ino)
        else {
            return Ok(());
        };
        for (name, child) in durable {
            let Some(n) = self.nodes.get(child) else {
                continue;
            };
            let path = dir.join(name);
            match &n.body {
                Body::Dir { .. } => {
                    std::fs::create_dir(&path)?;
                    self.write_dir(*child, &path, seen)?;
                }
                Body::File { durable, .. } => {
                    if let Some(first) = seen.get(child) {
                        std::fs::hard_link(first, &path)?;
                        continue;
                    }
                    std::fs::write(&path, durable)?;
                    seen.insert(*child, path.clone());
                }
            }
            set_mode(&path, n.mode);
        }
        Ok(())
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644)
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777));
}

#[derive(Debug)]
struct LazyFs(Arc<Mutex<State>>);

impl LazyFs {
    fn st(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.st();
        match st.lookup(parent.0, name) {
            Ok(ino) => match st.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.st().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.st();
        let Some(n) = st.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.mode = m & 0o7777;
        }
        if let Some(size) = size {
            let old = match &mut n.body {
                Body::File { data, .. } => {
                    let old = data.len() as u64;
                    data.resize(size as usize, 0);
                    old
                }
                Body::Dir { .. } => return reply.error(Errno::EISDIR),
            };
            n.dirty_range(old.min(size), old.max(size));
            n.mtime = SystemTime::now();
        }
        match st.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let body = Body::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        match st.new_node(parent.0, name, body, mode & !umask) {
            Ok(ino) => reply.entry(&TTL, &st.attr(ino).expect("new"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        match st.entries(parent.0) {
            Ok(e) => match e.remove(name) {
                Some(_) => reply.ok(),
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let ino = match st.lookup(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match st.entries(ino) {
            Ok(e) if !e.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Ok(_) => {}
            Err(e) => return reply.error(e),
        }
        st.entries(parent.0).expect("parent").remove(name);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let ino = match st.lookup(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        if let Err(e) = st.entries(newparent.0) {
            return reply.error(e);
        }
        st.entries(parent.0).expect("parent").remove(name);
        st.entries(newparent.0)
            .expect("new parent")
            .insert(newname.to_owned(), ino);
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let Some(a) = st.attr(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match st.entries(newparent.0) {
            Ok(e) if e.contains_key(newname) => reply.error(Errno::EEXIST),
            Ok(e) => {
                e.insert(newname.to_owned(), ino.0);
                reply.entry(&TTL, &a, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.st().nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.st();
        let body = Body::File {
            data: Vec::new(),
            durable: Vec::new(),
            dirty: Vec::new(),
            dirty_set: BTreeSet::new(),
        };
        match st.new_node(parent.0, name, body, mode & !umask) {
            Ok(ino) => reply.created(
                &TTL,
                &st.attr(ino).expect("new"),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.st();
        match st.nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::File { data, .. }) => {
                let from = (offset as usize).min(data.len());
                let to = (from + size as usize).min(data.len());
                reply.data(&data[from..to]);
            }
            Some(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        buf: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.st();
        st.stats.writes += 1;
        let Some(n) = st.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let old = match &mut n.body {
            Body::File { data, .. } => {
                let old = data.len() as u64;
                let end = offset as usize + buf.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[offset as usize..end].copy_from_slice(buf);
                old
            }
            Body::Dir { .. } => return reply.error(Errno::EISDIR),
        };
        // Zeros between the old end and the write are unsynced too.
        n.dirty_range(old.min(offset), offset + buf.len() as u64);
        n.mtime = SystemTime::now();
        reply.written(buf.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        let mut st = self.st();
        if st.ignore_fsync {
            return reply.ok();
        }
        st.fsync(ino.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.st();
        let entries: Vec<(OsString, u64)> = match st.entries(ino.0) {
            Ok(e) => e.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(e) => return reply.error(e),
        };
        let mut all = vec![
            (OsString::from("."), ino.0, FileType::Directory),
            (OsString::from(".."), ino.0, FileType::Directory),
        ];
        for (name, child) in entries {
            let kind = match st.nodes.get(&child).map(|n| &n.body) {
                Some(Body::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((name, child, kind));
        }
        for (i, (name, child, kind)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        st.stats.fsyncdirs += 1;
        if let Some(Node {
            body: Body::Dir { entries, durable },
            ..
        }) = st.nodes.get_mut(&ino.0)
        {
            *durable = entries.clone();
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            1 << 20,
            1 << 19,
            1 << 19,
            1 << 20,
            1 << 19,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// The mounted rig.
#[derive(Debug)]
pub struct Rig {
    backing: PathBuf,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
    stats: Stats,
    ignore_fsync: bool,
}

impl Rig {
    /// Mounts the lazy filesystem of `backing` (the "disk") at `mountpoint`
    /// (both folders are created). The error says why FUSE cannot be used.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<Rig, String> {
        std::fs::create_dir_all(backing).map_err(|e| format!("{}: {e}", backing.display()))?;
        std::fs::create_dir_all(mountpoint)
            .map_err(|e| format!("{}: {e}", mountpoint.display()))?;
        let mut rig = Rig {
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            session: None,
            state: Arc::new(Mutex::new(State::default())),
            stats: Stats::default(),
            ignore_fsync: false,
        };
        rig.start()?;
        Ok(rig)
    }

    fn start(&mut self) -> Result<(), String> {
        let st = State::load(&self.backing)
            .map_err(|e| format!("loading {}: {e}", self.backing.display()))?;
        let mut st = st;
        st.ignore_fsync = self.ignore_fsync;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = st;
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("pos-powercut".into()), MountOption::RW];
        let session =
            fuser::spawn_mount(LazyFs(Arc::clone(&self.state)), &self.mountpoint, &config)
                .map_err(|e| {
                    format!(
                        "cannot mount the power-cut FUSE filesystem at {} ({e}): the rig needs \
                     /dev/fuse, fusermount3 (Debian package fuse3, `cargo xtask install`) \
                     and the right to mount (root or the fuse group)",
                        self.mountpoint.display()
                    )
                })?;
        self.session = Some(session);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), String> {
        if let Some(s) = self.session.take() {
            s.umount_and_join()
                .map_err(|e| format!("unmounting {}: {e}", self.mountpoint.display()))?;
        }
        Ok(())
    }

    /// Makes file fsyncs no-ops (folder fsyncs still work): a disk that
    /// lies. Only to show that a test on the rig fails when data is not
    /// made durable.
    pub fn set_ignore_fsync(&mut self, yes: bool) {
        self.ignore_fsync = yes;
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ignore_fsync = yes;
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every process writing to the mount must be dead
    /// already. Unsynced data and names are lost; with `torn`, a random
    /// prefix of one file's unsynced pages reaches the disk. Then mounts
    /// again from what the disk holds.
    pub fn power_cut(&mut self, torn: Option<&mut Rng>) -> Result<(), String> {
        self.stop()?;
        let stats = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.cut(torn);
            st.write_durable(&self.backing)
                .map_err(|e| format!("writing the durable image: {e}"))?;
            st.stats.clone()
        };
        self.add_stats(&stats);
        self.start()
    }

    fn add_stats(&mut self, s: &Stats) {
        self.stats.fsyncs += s.fsyncs;
        self.stats.fsyncdirs += s.fsyncdirs;
        self.stats.writes += s.writes;
        self.stats.cuts += s.cuts;
        self.stats.torn += s.torn;
        self.stats.pages_lost += s.pages_lost;
        self.stats.names_lost += s.names_lost;
    }

    /// What the rig counted (up to the last power cut).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.fsyncs += st.stats.fsyncs;
        s.fsyncdirs += st.stats.fsyncdirs;
        s.writes += st.stats.writes;
        s
    }

    /// Unmounts cleanly: everything reaches the disk (as at a clean shutdown).
    pub fn unmount(mut self) -> Result<(), String> {
        self.stop()?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let inos: Vec<u64> = st.nodes.keys().copied().collect();
        for i in inos {
            st.fsync(i);
            if let Some(Node {
                body: Body::Dir { entries, durable },
                ..
            }) = st.nodes.get_mut(&i)
            {
                *durable = entries.clone();
            }
        }
        st.write_durable(&self.backing)
            .map_err(|e| format!("writing the durable image: {e}"))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
