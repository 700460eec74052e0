//! Forwarding SIGINT and SIGTERM that ferry receives to the runc processes it waits for.
//!
//! While at least one [`Forwarding`] is alive, ferry's handlers for SIGINT and SIGTERM send the
//! signal on to every registered runc, which passes it to its container (runc's foreground
//! `run` forwards the signals it receives). When the last one is dropped the previous handlers
//! come back, so ferry is interruptible again.
//!
//! Signals the kernel raises for a terminal (Ctrl-C) are not forwarded: they already reach
//! runc and the container, which share ferry's foreground process group.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::Error;

/// How many runc processes one ferry process can forward to at once.
const SLOTS: usize = 64;

/// Registered runc pids, 0 for a free slot; read by the signal handler, so atomics only.
static RUNC_PIDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// Number of live [`Forwarding`]s and the handlers they replaced.
static STATE: Mutex<(usize, Option<[SigAction; 2]>)> = Mutex::new((0, None));

const FORWARDED: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

/// A registration for signal forwarding; see the module documentation.
pub(crate) struct Forwarding {
    slot: Option<usize>,
}

impl Forwarding {
    /// Installs the forwarding handlers unless another registration already did.
    pub(crate) fn start() -> Result<Self, Error> {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == 0 {
            let action = SigAction::new(
                SigHandler::SigAction(forward),
                SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
                SigSet::empty(),
            );
            // SAFETY: `forward` only reads atomics and calls kill(2), which is async-signal-safe.
            let int = unsafe { sigaction(Signal::SIGINT, &action) }.map_err(Error::Signals)?;
            let term = match unsafe { sigaction(Signal::SIGTERM, &action) } {
                Ok(term) => term,
                Err(e) => {
                    // SAFETY: puts back the handler that was there a moment ago.
                    let _ = unsafe { sigaction(Signal::SIGINT, &int) };
                    return Err(Error::Signals(e));
                }
            };
            state.1 = Some([int, term]);
        }
        state.0 += 1;
        Ok(Forwarding { slot: None })
    }

    /// Forwards signals to `pid` from now on.
    pub(crate) fn watch(&mut self, pid: i32) {
        let free = RUNC_PIDS.iter().position(|slot| {
            slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if free.is_none() {
            tracing::warn!(
                pid,
                "too many containers in one process; signals not forwarded"
            );
        }
        self.slot = free;
    }

    /// Stops forwarding; call before the pid is reaped so that it is never signalled after
    /// it could have been reused.
    pub(crate) fn unwatch(&mut self) {
        if let Some(slot) = self.slot.take() {
            RUNC_PIDS[slot].store(0, Ordering::SeqCst);
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.unwatch();
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_sub(1);
        if state.0 > 0 {
            return;
        }
        if let Some(previous) = state.1.take() {
            for (signal, action) in FORWARDED.into_iter().zip(previous) {
                // SAFETY: restores the handler that was installed before ours.
                if let Err(e) = unsafe { sigaction(signal, &action) } {
                    tracing::warn!(%signal, error = %e, "cannot restore signal handler");
                }
            }
        }
    }
}

/// The handler: sends the signal on to every registered runc.
extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (checked for null anyway).
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    if code == libc::SI_KERNEL {
        return;
    }

    // SAFETY: errno is thread-local; kill(2) may change it and the interrupted code may not
    // expect that.
    let errno = unsafe { *libc::__errno_location() };
    for slot in &RUNC_PIDS {
        let pid = slot.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe; the pid is a child not yet reaped.
            unsafe { libc::kill(pid, signal) };
        }
    }
    unsafe { *libc::__errno_location() = errno };
}
