//! The knote table: a slab of knotes, a dense per-fd table for fd-based filters, a hashed index for the
//! others, and the active queue of knotes that are ready without a kernel object saying so.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::sys::{RawFd, WipeVec};

/// A cheap hasher for integer keys (idents are not attacker-chosen hash-flooding input in any useful way:
/// a collision only costs a longer probe, and it is keyed by the caller's own idents).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_i16(&mut self, n: i16) {
        self.write_u64(n as u16 as u64);
    }
    fn write_i32(&mut self, n: i32) {
        self.write_u64(n as u32 as u64);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Filter-specific state of a knote. Kept to 16 bytes: what does not fit is boxed (timers, files, vnodes,
/// processes), so the knotes that come by the hundred thousand (USER, READ, WRITE) stay small.
#[derive(Debug)]
pub(crate) enum Kind {
    /// READ/WRITE on an fd that epoll watches. `revents` holds a deferred epoll report; `last_*` remember
    /// what an EV_CLEAR knote last reported.
    Fd { revents: u32, last_eof: bool, last_data: isize },
    /// READ/WRITE on an fd epoll refuses: regular files and directories (see `FileState`).
    File(Box<FileState>),
    /// EVFILT_TIMER: a deadline on the kqueue's timer source.
    Timer(Box<crate::filter::timer::TimerState>),
    /// EVFILT_USER: no kernel object at all.
    User { triggered: bool },
    /// EVFILT_SIGNAL: the process-wide delivery count of `sig` when last reported.
    Signal { sig: i32, last: u64 },
    /// EVFILT_VNODE (see `VnodeState`).
    Vnode(Box<VnodeState>),
    /// EVFILT_PROC / EVFILT_PROCDESC (see `ProcState`).
    Proc(Box<ProcState>),
}

/// A regular file or directory (READ re-checked on inotify IN_MODIFY through watch `wd`), or another
/// always-ready file. `dev`/`ino` name the file, so a reused fd number is noticed.
#[derive(Debug)]
pub(crate) struct FileState {
    pub wd: i32,
    pub regular: bool,
    pub dev: u64,
    pub ino: u64,
}

/// EVFILT_VNODE: a share of the kqueue's inotify watch `wd` on the file `dev`/`ino`, the fstat snapshot the
/// next event is compared with, and the notes gathered since the last report. `mnt` is its mount id
/// (NOTE_REVOKE when that mount is gone). `early` marks changes the snapshot showed before their own
/// inotify event was read (see `vnode::EARLY_*`), so that event is not taken for a further change. A
/// directory knote asking for NOTE_DELETE also shares the kqueue's internal watch `parent_wd` on its parent
/// (-1: none), where it is the entry `name` (rmdir is told only to the parent: `vnode::sync_parent`).
#[derive(Debug)]
pub(crate) struct VnodeState {
    pub wd: i32,
    pub parent_wd: i32,
    pub name: Box<[u8]>,
    pub dev: u64,
    pub ino: u64,
    pub mnt: u64,
    pub dir: bool,
    pub snap: crate::filter::vnode::Snapshot,
    pub pending: u32,
    pub early: u8,
}

/// EVFILT_PROC / EVFILT_PROCDESC: a pidfd of its own (-1 for a tracked child that was gone before it could
/// be opened), the notes and data waiting to be reported, and the exit once seen (`Some(None)`: exited,
/// status unknown).
#[derive(Debug)]
pub(crate) struct ProcState {
    pub pidfd: RawFd,
    pub pid: i32,
    pub pending: u32,
    pub data: isize,
    pub exit: Option<Option<i32>>,
    pub registered: bool,
}

#[derive(Debug)]
pub(crate) struct Knote {
    pub ident: usize,
    pub sdata: isize,
    pub udata: usize,
    pub sfflags: u32,
    /// The collect call that last reported it (see `State::seq`).
    pub seen: u32,
    pub filter: i16,
    /// EV_ONESHOT | EV_CLEAR | EV_DISPATCH | EV_RECEIPT, as given when it was added.
    pub flags: u16,
    pub enabled: bool,
    /// On the active queue.
    pub queued: bool,
    pub kind: Kind,
}

impl Knote {
    /// A new knote for the change `ch` (enabled unless it says EV_DISABLE), with the flags it keeps and
    /// the fflags it stores.
    pub fn from_change(ch: &crate::kevent::Kevent, flags: u16, sfflags: u32, kind: Kind) -> Knote {
        Knote {
            ident: ch.ident,
            filter: ch.filter,
            flags,
            sfflags,
            sdata: ch.data,
            udata: ch.udata,
            enabled: ch.flags & crate::consts::EV_DISABLE == 0,
            queued: false,
            seen: 0,
            kind,
        }
    }
}

/// One knote's place: 64 bytes, aligned to a cache line, so looking a knote up touches one line.
#[repr(align(64))]
struct Slot {
    gen: u32,
    knote: Option<Knote>,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// Knote storage with stable slot numbers and a generation per slot, so a token naming a freed slot is
/// recognised as stale.
#[derive(Default)]
pub(crate) struct Slab {
    slots: WipeVec<Slot>,
    free: Vec<u32>,
    len: usize,
}

impl Slab {
    pub fn insert(&mut self, k: Knote) -> u32 {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            self.slots[i as usize].knote = Some(k);
            i
        } else {
            self.slots.push(Slot { gen: 0, knote: Some(k) });
            (self.slots.len() - 1) as u32
        }
    }

    pub fn reserve(&mut self, n: usize) {
        let more = n.saturating_sub(self.free.len());
        self.slots.reserve(more);
    }

    pub fn remove(&mut self, i: u32) -> Option<Knote> {
        let s = self.slots.get_mut(i as usize)?;
        let k = s.knote.take()?;
        s.gen = (s.gen + 1) & 0x7fff_ffff;
        self.free.push(i);
        self.len -= 1;
        Some(k)
    }

    pub fn get(&self, i: u32) -> Option<&Knote> {
        self.slots.get(i as usize)?.knote.as_ref()
    }

    pub fn get_mut(&mut self, i: u32) -> Option<&mut Knote> {
        self.slots.get_mut(i as usize)?.knote.as_mut()
    }

    pub fn gen(&self, i: u32) -> u32 {
        self.slots.get(i as usize).map_or(u32::MAX, |s| s.gen)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter_slots(&self) -> impl Iterator<Item = (u32, &Knote)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.knote.as_ref().map(|k| (i as u32, k)))
    }

    pub fn iter_slots_mut(&mut self) -> impl Iterator<Item = (u32, &mut Knote)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| s.knote.as_mut().map(|k| (i as u32, k)))
    }
}

/// The (ident, filter) index of the knotes that are not READ/WRITE: an open-addressing table of slot
/// numbers (4 bytes an entry, at most half full: ~8 bytes a knote, where a hash map of keys took ~50), the
/// keys themselves read from the slab. Linear probing with backward-shift deletion (no tombstones).
#[derive(Default)]
pub(crate) struct Index {
    /// slot + 1 per entry; 0 = empty.
    table: WipeVec<u32>,
    len: usize,
}

#[inline]
fn home(ident: usize, filter: i16, mask: usize) -> usize {
    let mut h =
        (ident as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (filter as u16 as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 31;
    (h.wrapping_mul(0x94D0_49BB_1331_11EB) >> 32) as usize & mask
}

impl Index {
    /// The slot of the knote (ident, filter).
    #[inline]
    pub fn get(&self, ident: usize, filter: i16, slab: &Slab) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut i = home(ident, filter, mask);
        loop {
            let v = self.table[i];
            if v == 0 {
                return None;
            }
            if let Some(k) = slab.get(v - 1) {
                if k.ident == ident && k.filter == filter {
                    return Some(v - 1);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Indexes `slot`, which holds the knote (ident, filter) (not indexed yet).
    pub fn insert(&mut self, ident: usize, filter: i16, slot: u32, slab: &Slab) {
        if (self.len + 1) * 2 > self.table.len() {
            self.grow(slab);
        }
        let mask = self.table.len() - 1;
        let mut i = home(ident, filter, mask);
        while self.table[i] != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = slot + 1;
        self.len += 1;
    }

    fn grow(&mut self, slab: &Slab) {
        let cap = (self.table.len() * 2).max(16);
        let old = std::mem::replace(&mut self.table, WipeVec::filled(cap, 0));
        let mask = cap - 1;
        for &v in old.iter().filter(|&&v| v != 0) {
            let Some(k) = slab.get(v - 1) else { continue };
            let mut i = home(k.ident, k.filter, mask);
            while self.table[i] != 0 {
                i = (i + 1) & mask;
            }
            self.table[i] = v;
        }
    }

    /// Drops `slot` (the knote (ident, filter), which may already be gone from the slab) from the index.
    pub fn remove(&mut self, ident: usize, filter: i16, slot: u32, slab: &Slab) {
        if self.table.is_empty() {
            return;
        }
        let mask = self.table.len() - 1;
        let mut i = home(ident, filter, mask);
        loop {
            match self.table[i] {
                0 => return,
                v if v == slot + 1 => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward shift: pull later entries of the probe run into the hole when their home allows it.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let v = self.table[j];
            if v == 0 {
                break;
            }
            let Some(k) = slab.get(v - 1) else { continue };
            let h = home(k.ident, k.filter, mask);
            // `h` lies cyclically in (hole, j]: the entry stays.
            let stays = if hole <= j { hole < h && h <= j } else { hole < h || h <= j };
            if !stays {
                self.table[hole] = v;
                hole = j;
            }
        }
        self.table[hole] = 0;
        self.len -= 1;
    }

    pub fn clear(&mut self) {
        self.table = WipeVec::new();
        self.len = 0;
    }
}

/// How an fd's knotes learn of readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdReg {
    /// Registered in the kqueue's epoll (when `mask != 0`).
    Epoll,
    /// epoll refused it (EPERM): regular file, directory or a file without poll; see `Kind::File`.
    File,
}

/// What an fd is, learnt once (on its first report), so `data` costs at most the one syscall it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    Unknown,
    /// A socket: FIONREAD / send-buffer space.
    Socket,
    /// A listening socket: the accept queue's length (TCP_INFO, or sock_diag for unix sockets).
    Listener,
    /// A pipe or FIFO: FIONREAD / pipe-buffer space.
    Pipe,
    /// A character device (tty): FIONREAD.
    Char,
    /// A kqrs kqueue (another one's fd): `data` is how many events it has pending (`State::nested`).
    Kqueue,
    /// Anything else (eventfd, timerfd, pidfd, epoll, signalfd, ...): readable means an event, `data` 0.
    Other,
}

/// The per-fd entry of the dense fd table: the READ and WRITE knotes on that fd and its epoll registration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FdEntry {
    /// Slot + 1 of the READ knote; 0 = none.
    pub read: u32,
    /// Slot + 1 of the WRITE knote; 0 = none.
    pub write: u32,
    /// The epoll mask registered now (0 = not registered).
    pub mask: u32,
    /// Bumped every time the fd gets a new registration, so events of an old one are recognised.
    pub gen: u32,
    /// Registered edge-triggered because the last wake-up had nothing any knote may report.
    pub parked: bool,
    /// The registration was just added or modified: epoll re-reports a ready fd then, which is no new edge.
    pub synced: bool,
    pub reg: FdReg,
    pub kind: FdKind,
    /// The socket error read with SO_ERROR, kept for later reports (the C face only: `filter::fd::evaluate`).
    pub so_error: u16,
    /// The file's identity (`filter::fd::fingerprint`; 0 = not learnt, `STALE` = known to be gone), so a
    /// registration-less fd (every knote disabled) can still be told from a new file under its number.
    pub fp: u64,
}

impl FdEntry {
    pub const EMPTY: FdEntry = FdEntry {
        read: 0,
        write: 0,
        mask: 0,
        gen: 0,
        parked: false,
        synced: false,
        reg: FdReg::Epoll,
        kind: FdKind::Unknown,
        so_error: 0,
        fp: 0,
    };

    pub fn is_empty(&self) -> bool {
        self.read == 0 && self.write == 0
    }
}

/// The active queue: knotes to look at on the next collect, by (slot, generation).
pub(crate) type ActiveQueue = VecDeque<(u32, u32)>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn knote(ident: usize, filter: i16) -> Knote {
        let ch = crate::kevent::Kevent::new(ident, filter, 0, 0, 0, 0);
        Knote::from_change(&ch, 0, 0, Kind::User { triggered: false })
    }

    /// The index agrees with a hash map through random inserts and removes (colliding idents included).
    #[test]
    fn index_agrees_with_a_map() {
        let mut slab = Slab::default();
        let mut index = Index::default();
        let mut model: HashMap<(usize, i16), u32> = HashMap::new();
        let mut seed = 0x1234_5678_u64;
        let mut rand = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for step in 0..200_000 {
            let ident = rand() % 3000 * if step % 7 == 0 { 1 << 40 } else { 1 };
            let filter = [-11i16, -7, -5, -6][rand() % 4];
            match model.get(&(ident, filter)).copied() {
                Some(slot) if rand() % 3 != 0 => {
                    slab.remove(slot);
                    index.remove(ident, filter, slot, &slab);
                    model.remove(&(ident, filter));
                }
                Some(_) => {}
                None => {
                    let slot = slab.insert(knote(ident, filter));
                    index.insert(ident, filter, slot, &slab);
                    model.insert((ident, filter), slot);
                }
            }
            if step % 997 == 0 {
                for (&(i, f), &s) in &model {
                    assert_eq!(index.get(i, f, &slab), Some(s));
                }
                assert_eq!(index.len, model.len());
            }
            assert_eq!(index.get(ident, filter, &slab), model.get(&(ident, filter)).copied());
        }
    }
}
