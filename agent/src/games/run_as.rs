//! `--run-as`: the unprivileged user games run as, looked up once at start and set on every
//! game's spawn.

use tokio::process::Command;

/// A user to run games as (`--run-as`), resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name, for messages.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// Why a `--run-as` user cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    /// The user database has no such user.
    #[error("--run-as: no user {0:?}")]
    NoUser(String),
    /// The user database cannot be read.
    #[error("--run-as {name:?}: {source}")]
    Lookup {
        /// The user asked for.
        name: String,
        /// Why the lookup failed.
        source: nix::Error,
    },
}

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<Self, RunAsError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Self {
                name: name.to_owned(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(RunAsError::NoUser(name.to_owned())),
            Err(source) => Err(RunAsError::Lookup {
                name: name.to_owned(),
                source,
            }),
        }
    }
}

/// Makes `cmd` run as `user`: its uid and primary gid. The agent's supplementary groups
/// (root's among them) do not follow: when root sets a uid, std clears them (`setgroups(0)`)
/// before `setuid`, so no `pre_exec` is needed and the spawn stays a plain one.
pub(super) fn run_as(cmd: &mut Command, user: &RunAs) {
    cmd.uid(user.uid).gid(user.gid);
}
