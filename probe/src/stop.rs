//! The process-wide stop request: SIGTERM, SIGINT, SIGHUP, stdin EOF, `--duration` or a closed
//! stdout all end the run the same way (stop sending, resolve what is in flight, flush).

use std::io::Read;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static WHY: AtomicU8 = AtomicU8::new(0);
/// The wake pipe ([`wake_fd`]): read end, write end; -1 until [`init_wake`].
static WAKE_R: AtomicI32 = AtomicI32::new(-1);
static WAKE_W: AtomicI32 = AtomicI32::new(-1);

/// Why the run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// Not stopped (yet).
    None = 0,
    /// A signal (SIGTERM, SIGINT, SIGHUP).
    Signal = 1,
    /// End of standard input.
    StdinEof = 2,
    /// `--duration` elapsed.
    Duration = 3,
    /// Standard output was closed: nobody reads the events any more.
    StdoutClosed = 4,
    /// Start-up failed.
    Error = 5,
}

impl Reason {
    /// The reason as it appears in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::Signal => "signal",
            Reason::StdinEof => "stdin-eof",
            Reason::Duration => "duration",
            Reason::StdoutClosed => "stdout-closed",
            Reason::Error => "error",
        }
    }
}

/// Requests a stop; the first reason sticks.
pub fn request(why: Reason) {
    let _ = WHY.compare_exchange(0, why as u8, Ordering::SeqCst, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
    wake();
}

/// Creates the wake pipe: its read end becomes readable at the first stop request, so that
/// every thread can sleep in `ppoll` until its next probe is due instead of waking every few
/// milliseconds to look at [`requested`] (eight probers doing that cost a third of a vCPU on an
/// emulated lab node). Idempotent; `false` if the pipe could not be made (then the callers
/// fall back to short sleeps).
pub fn init_wake() -> bool {
    if WAKE_R.load(Ordering::SeqCst) >= 0 {
        return true;
    }
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return false;
    }
    if WAKE_R
        .compare_exchange(-1, fds[0], Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // Another thread made one first.
        // SAFETY: both descriptors were just created here and are not shared.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        return true;
    }
    WAKE_W.store(fds[1], Ordering::SeqCst);
    if requested() {
        wake();
    }
    true
}

/// The wake pipe's read end ([`init_wake`]): readable once a stop was requested. Never read:
/// it stays readable for every thread that polls it.
pub fn wake_fd() -> Option<RawFd> {
    let fd = WAKE_R.load(Ordering::SeqCst);
    (fd >= 0).then_some(fd)
}

/// Makes the wake pipe readable. Async-signal-safe (one `write(2)`); a full pipe is already
/// readable.
fn wake() {
    let fd = WAKE_W.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writing one byte from a static buffer to a descriptor this module owns.
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
    }
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The first reason given, [`Reason::None`] if no stop was requested.
pub fn reason() -> Reason {
    match WHY.load(Ordering::SeqCst) {
        1 => Reason::Signal,
        2 => Reason::StdinEof,
        3 => Reason::Duration,
        4 => Reason::StdoutClosed,
        5 => Reason::Error,
        _ => Reason::None,
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only atomics and write(2): async-signal-safe.
    let _ = WHY.compare_exchange(0, Reason::Signal as u8, Ordering::SeqCst, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
    wake();
}

/// Installs handlers so SIGTERM, SIGINT and SIGHUP request a stop (the first one; the default
/// action is restored, so a second signal kills the process as usual).
pub fn install_signal_handlers() {
    init_wake();
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches atomics. SA_RESETHAND
        // restores the default action after the first delivery.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Starts a thread that requests a stop when `input` reaches end of file (or fails). Whatever
/// is read is discarded.
pub fn stop_on_eof<R: Read + Send + 'static>(mut input: R) {
    let spawned = std::thread::Builder::new()
        .name("stdin-eof".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 512];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            request(Reason::StdinEof);
        });
    if spawned.is_err() {
        request(Reason::Error);
    }
}
