//! The process-wide stop request: SIGTERM, SIGINT, SIGHUP, stdin EOF, `--duration` or a closed
//! stdout all end the run the same way (stop sending, resolve what is in flight, flush).

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static WHY: AtomicU8 = AtomicU8::new(0);

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
    // Only atomics: async-signal-safe.
    let _ = WHY.compare_exchange(0, Reason::Signal as u8, Ordering::SeqCst, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Installs handlers so SIGTERM, SIGINT and SIGHUP request a stop (the first one; the default
/// action is restored, so a second signal kills the process as usual).
pub fn install_signal_handlers() {
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
