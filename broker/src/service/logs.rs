//! A session's game output (`GET /v1/sessions/{id}/logs`), read from its host's agent page by
//! page, wherever the agent is connected ([`super::route`]).
//!
//! The agent keeps each session's stdout and stderr in one file; a read is one or more
//! [`LogRead`]s of at most a frame's worth each, until the answer holds what the first page
//! said the log held then, or [`MAX_LOG_BYTES`].

use std::time::Duration;

use protocol::wire::{LogChunk, LogRead, LogUnavailable};
use protocol::{HostId, SessionId};
use tokio::time::Instant;

use super::Service;
use crate::agents::{AgentLink, LinkError};
use crate::error::{Error, Unreachable};

/// The most bytes of output one answer holds (API.md: at most 1 MiB).
pub const MAX_LOG_BYTES: u32 = 1 << 20;
/// Lines answered when the caller names no `tail`.
pub const DEFAULT_TAIL: u32 = 200;
/// An agent answers each page within this.
pub(super) const PAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole read ends by then, with what it has.
const READ_DEADLINE: Duration = Duration::from_secs(15);

/// Which part of a session's output to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogQuery {
    /// The last lines, at most [`MAX_LOG_BYTES`] of them.
    Tail(u32),
    /// From a byte offset (an earlier answer's `end`): what was written since.
    From(u64),
}

/// A part of a session's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameLog {
    /// The output, as the game wrote it (not necessarily UTF-8).
    pub text: Vec<u8>,
    /// The offset of `text`'s first byte in the whole log.
    pub start: u64,
    /// The offset just past `text`: where a read [`LogQuery::From`] goes on.
    pub end: u64,
}

impl Service {
    /// Reads a session's game output from its host.
    pub async fn session_log(&self, id: &SessionId, query: LogQuery) -> Result<GameLog, Error> {
        let session = self.session(id).await?;
        let host = &session.host_id;
        let deadline = Instant::now() + READ_DEADLINE;
        let mut read = match query {
            LogQuery::Tail(lines) => LogRead::Tail {
                lines,
                max_bytes: MAX_LOG_BYTES,
            },
            LogQuery::From(offset) => LogRead::From { offset },
        };
        let mut log = GameLog {
            text: Vec::new(),
            start: 0,
            end: 0,
        };
        let mut until = None;
        loop {
            let page = self.log_page_routed(host, id, read).await?;
            // What the log held at the first page bounds the read; later output is for the
            // next one.
            let until = *until.get_or_insert_with(|| {
                log.start = page.offset;
                page.size
            });
            let room = (MAX_LOG_BYTES as usize).saturating_sub(log.text.len());
            let take = page.data.len().min(room);
            log.text.extend_from_slice(&page.data[..take]);
            log.end = page.offset + take as u64;
            if take == 0 || log.end >= until || take == room || Instant::now() >= deadline {
                return Ok(log);
            }
            read = LogRead::From { offset: log.end };
        }
    }

    /// Reads one page from `host`'s agent connected here.
    pub(super) async fn log_page_here(
        &self,
        link: &AgentLink,
        host: &HostId,
        id: &SessionId,
        read: LogRead,
    ) -> Result<LogChunk, Error> {
        let unreachable = |why| Error::HostUnavailable {
            host: host.clone(),
            why,
        };
        let answer = tokio::time::timeout(PAGE_TIMEOUT, link.read_log(id.clone(), read))
            .await
            .map_err(|_| unreachable(Unreachable::NoAnswer(PAGE_TIMEOUT)))?
            .map_err(|LinkError::Closed| unreachable(Unreachable::LogOffline))?;
        answer.map_err(|e| match e {
            LogUnavailable::NotFound => Error::NoLog {
                session: id.clone(),
                host: host.clone(),
            },
            LogUnavailable::Busy => unreachable(Unreachable::LogBusy),
            LogUnavailable::Unreadable => unreachable(Unreachable::LogUnreadable),
        })
    }
}
