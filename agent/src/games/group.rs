//! A game's process group, by its pgid: signalling it, whether any member is left, reaping the
//! members that are the agent's children, and how a process ended.

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::wire::ExitStatus;

/// How a process ended, as the protocol says it.
pub(super) fn exit_status(st: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        (None, None) => ExitStatus::Unknown,
    }
}

/// The group to signal for `pgid`, if it can be one.
pub(super) fn group_pid(pgid: u32) -> Option<Pid> {
    // A pgid of 0 or 1, or one that does not fit an i32, would address the wrong group.
    i32::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

/// Reaps every exited member of the group that is our child (re-parented orphans); returns how
/// the last one reaped ended.
pub(super) fn reap_group(pgid: u32) -> Option<ExitStatus> {
    let group = group_pid(pgid)?;
    let mut last = None;
    loop {
        match waitpid(Pid::from_raw(-group.as_raw()), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => last = Some(ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => last = Some(ExitStatus::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return last,
            Ok(_) => {}
        }
    }
}

/// Whether any process of the group is left.
pub(super) fn group_alive(pgid: u32) -> bool {
    let Some(group) = group_pid(pgid) else {
        return false;
    };
    !matches!(killpg(group, None), Err(Errno::ESRCH))
}

/// Sends `sig` to every process of the group; a group already gone is no error.
pub(super) fn signal_group(pgid: u32, sig: Signal) {
    if let Some(group) = group_pid(pgid) {
        match killpg(group, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal game"),
        }
    }
}
