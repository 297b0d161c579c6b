//! Why a command failed ([`CliError`]), and the one line `arcade` prints for it.

use std::error::Error as _;
use std::fmt::Write as _;

use protocol::IdError;

use crate::client::ClientError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The call to the broker failed, or the URL or key cannot be used.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An id given on the command line is not a valid id.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// A build given on the command line is not a sha256.
    #[error(transparent)]
    InvalidBuild(#[from] protocol::BuildIdError),
    /// The `--ca-cert` file cannot be read.
    #[error("cannot read --ca-cert {}: {source}", path.display())]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file given on the command line cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A catalog entry file is not TOML of an entry's shape.
    #[error("{} is not a catalog entry: {message}", path.display())]
    Entry {
        /// The file.
        path: std::path::PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The answer could not be written out.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// The answer could not be turned into JSON.
    #[error("cannot format the answer as JSON")]
    Json(#[source] serde_json::Error),
    /// `arcade token` cannot mint a token with what it was given.
    #[error("arcade token: {0}")]
    Token(String),
    /// `arcade events --types` names a type the broker does not send.
    #[error("unknown event type {0:?}; types: session.created, session.ready, session.running, session.stopping, session.ended, session.failed, session.lost, session.expiring, session.joined, host.online, host.offline, host.draining, host.resumed, game.updated, rollout.progressed, rollout.halted, rollout.done")]
    UnknownEventType(String),
}

impl CliError {
    /// Whether the output's reader went away (`arcade sessions | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// One line saying what went wrong, such as
/// `arcade: unknown_game: no host offers game "foo"` or
/// `arcade: cannot reach the broker at http://127.0.0.1:8080 (is arcade-broker running?): Connection refused (os error 111)`.
pub fn error_line(err: &CliError) -> String {
    let mut line = format!("arcade: {err}");
    // The error's own text, then the innermost cause: the one that says what really happened.
    let mut cause = err.source();
    while let Some(next) = cause.and_then(|c| c.source()) {
        cause = Some(next);
    }
    if let Some(cause) = cause {
        let _ = write!(line, ": {cause}");
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}
