//! The raw fd helpers the Rust tests need beside the engine (pipes, socket pairs, reads, writes, polls),
//! shared by rust/tests/*.rs (`mod util;`) and the engine bench (benches/engine.rs, through `#[path]`).
//! Every unsafe block says why it is sound. A helper that checks its syscall panics with the errno.
#![allow(dead_code)] // each includer uses its own part

/// Something with an fd number: an owned [`Fd`], or a plain `i32` (the bench keeps raw numbers).
pub trait Raw {
    /// The fd number.
    fn raw(&self) -> i32;
}

impl Raw for i32 {
    fn raw(&self) -> i32 {
        *self
    }
}

/// An owned fd, closed on drop.
pub struct Fd(pub i32);

impl Fd {
    /// The fd number.
    pub fn raw(&self) -> i32 {
        self.0
    }

    /// The fd number as a kevent ident.
    pub fn id(&self) -> usize {
        self.0 as usize
    }

    /// Closes it now (idempotent with drop).
    pub fn close(&mut self) {
        if self.0 >= 0 {
            close(self.0);
            self.0 = -1;
        }
    }
}

impl Raw for Fd {
    fn raw(&self) -> i32 {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        self.close();
    }
}

/// `r`, or a panic naming `what` and the errno when it is negative.
pub fn check(r: i32, what: &str) -> i32 {
    if r < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    r
}

/// Closes `fd` (unchecked).
pub fn close(fd: i32) {
    // SAFETY: closing an fd number touches no memory; callers close only fds they opened and no longer use.
    unsafe { libc::close(fd) };
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> (Fd, Fd) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two ints into `fds`, which has room for exactly two.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    (Fd(fds[0]), Fd(fds[1]))
}

/// A close-on-exec unix stream socket pair, with `flags` added to its type (e.g. SOCK_NONBLOCK).
pub fn raw_socketpair(flags: i32) -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two ints into `fds`, which has room for exactly two.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// A non-blocking, close-on-exec unix stream socket pair.
pub fn socketpair() -> (Fd, Fd) {
    let (a, b) = raw_socketpair(libc::SOCK_NONBLOCK);
    (Fd(a), Fd(b))
}

/// write(2) of `buf` (unchecked): what it returned.
pub fn write(fd: &impl Raw, buf: &[u8]) -> isize {
    // SAFETY: `buf` is valid for reads of buf.len() bytes across the call.
    unsafe { libc::write(fd.raw(), buf.as_ptr().cast(), buf.len()) }
}

/// Writes all of `buf` in one write(2).
pub fn write_all(fd: &impl Raw, buf: &[u8]) {
    let r = write(fd, buf);
    assert_eq!(r, buf.len() as isize, "write: {}", std::io::Error::last_os_error());
}

/// read(2) into `buf` (unchecked): what it returned.
pub fn read(fd: &impl Raw, buf: &mut [u8]) -> isize {
    // SAFETY: `buf` is valid for writes of buf.len() bytes and exclusively borrowed across the call.
    unsafe { libc::read(fd.raw(), buf.as_mut_ptr().cast(), buf.len()) }
}

/// Reads up to `n` bytes in one read(2).
pub fn read_n(fd: &impl Raw, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let r = read(fd, &mut buf);
    assert!(r >= 0, "read: {}", std::io::Error::last_os_error());
    buf.truncate(r as usize);
    buf
}

/// Bytes waiting to be read (FIONREAD; unchecked).
pub fn fionread(fd: &impl Raw) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`.
    unsafe { libc::ioctl(fd.raw(), libc::FIONREAD, &mut n) };
    n
}

/// A pipe's capacity (F_GETPIPE_SZ).
pub fn pipe_capacity(fd: &impl Raw) -> isize {
    // SAFETY: F_GETPIPE_SZ takes no pointer argument.
    let r = unsafe { libc::fcntl(fd.raw(), libc::F_GETPIPE_SZ) };
    assert!(r > 0);
    r as isize
}

/// A socket's send buffer size (SO_SNDBUF).
pub fn sndbuf(fd: &impl Raw) -> isize {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes across the call; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(fd.raw(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&mut v as *mut libc::c_int).cast(), &mut len)
    };
    assert_eq!(r, 0);
    v as isize
}

/// Bytes queued in a socket's send queue (SIOCOUTQ).
pub fn outq(fd: &impl Raw) -> isize {
    let mut v: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (== SIOCOUTQ) writes one c_int through the pointer, which points at `v`.
    let r = unsafe { libc::ioctl(fd.raw(), libc::TIOCOUTQ, &mut v as *mut libc::c_int) };
    assert_eq!(r, 0);
    v as isize
}

/// shutdown(2) of the sending side; what it returned.
pub fn shutdown_write(fd: &impl Raw) -> i32 {
    // SAFETY: shutdown takes no pointers.
    unsafe { libc::shutdown(fd.raw(), libc::SHUT_WR) }
}

/// poll(2) of `fd` for POLLIN, up to `timeout_ms`: (what poll returned, revents).
pub fn poll_in(fd: i32, timeout_ms: i32) -> (i32, i16) {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid pollfd, exclusively borrowed across the call.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    (r, p.revents)
}

/// Whether poll(2) says `fd` is readable right now.
pub fn poll_readable(fd: i32) -> bool {
    let (r, revents) = poll_in(fd, 0);
    assert!(r >= 0, "poll: {}", std::io::Error::last_os_error());
    r == 1 && revents & libc::POLLIN != 0
}

/// fcntl(F_GETFD): the fd's flags, -1 when it is not open.
pub fn fd_flags(fd: i32) -> i32 {
    // SAFETY: F_GETFD takes no pointer argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) }
}

/// The soft and hard RLIMIT_NOFILE.
fn nofile() -> libc::rlimit {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `rl`, valid for writes across the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl
}

/// An fd number that is certainly not open, even while other tests open and close fds concurrently: the
/// soft RLIMIT_NOFILE (valid fds are below it).
pub fn closed_fd() -> usize {
    let fd = nofile().rlim_cur.min(i32::MAX as u64) as i32;
    assert_eq!(fd_flags(fd), -1);
    fd as usize
}

/// Raises the soft RLIMIT_NOFILE to the hard one (best effort).
pub fn raise_nofile() {
    let mut rl = nofile();
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: setrlimit reads one rlimit from `rl`, valid across the call.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    }
}
