//! The event feed: the one reader of the store's event stream that tells every open stream
//! (`GET /v1/events`) of new events, so a hundred clients cost one read per change, not a
//! hundred.
//!
//! Events are numbered by the store, in commit order and without a gap
//! ([`Store::stream_after`]); the feed reads them in that order and broadcasts each once. It
//! reads when this broker has recorded a change ([`Feed::wake`]) and every `poll` (other
//! replicas' changes). A stream that falls behind the broadcast, or sees a number jump, reads
//! the store itself, so nothing is missed or repeated. This module knows nothing of HTTP.
//!
//! [`webhooks`]: delivering the events to receivers' URLs, signed, from a cursor per URL.

pub mod webhooks;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use protocol::api::Event;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Events buffered for streams; a stream that falls further behind reads the store.
const FEED_QUEUE: usize = 1024;
/// Events read from the store at once.
pub const PAGE: u32 = 500;

/// An event with its JSON, made once for every stream that sends it, and room for the bytes
/// a stream writes for it, made once too (by the first stream that writes it).
#[derive(Debug)]
pub struct Fed {
    /// The event.
    pub event: Event,
    /// The event as JSON (one line: JSON has no raw newline).
    pub json: String,
    /// The event as streams write it, shared by all of them.
    pub written: OnceLock<bytes::Bytes>,
}

impl Fed {
    /// `e`, with its JSON.
    pub fn new(event: Event) -> Arc<Self> {
        let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
        Arc::new(Self {
            event,
            json,
            written: OnceLock::new(),
        })
    }
}

/// New events, for every open stream.
#[derive(Debug)]
pub struct Feed {
    tx: broadcast::Sender<Arc<Fed>>,
    wake: Notify,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(FEED_QUEUE).0,
            wake: Notify::new(),
        }
    }
}

impl Feed {
    /// Says the store has new events (a change was recorded here). While no stream listens
    /// the feed is not woken at all (it reads nothing then, and resumes from the store's head
    /// at its next poll or wake once one does).
    pub fn wake(&self) {
        if self.tx.receiver_count() > 0 {
            self.wake.notify_one();
        }
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Fed>> {
        self.tx.subscribe()
    }

    /// Reads new events from `store` and broadcasts them, when woken and every `poll`, until
    /// `shutdown` fires.
    pub async fn run(&self, store: &Store, poll: Duration, shutdown: CancellationToken) {
        let mut last = loop {
            match store.stream_head().await {
                Ok(head) => break head,
                Err(e) => {
                    tracing::warn!(error = %e, "event feed: cannot read the stream's head");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(poll) => {}
                    }
                }
            }
        };
        // Whether `last` may be behind the stream because nobody was listening.
        let mut skipped = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            // Nobody listens: nothing to read or encode. A stream opened meanwhile reads the
            // store from its own number, and takes the feed from wherever it resumes.
            if self.tx.receiver_count() == 0 {
                skipped = true;
                continue;
            }
            if skipped {
                match store.stream_head().await {
                    Ok(head) => (last, skipped) = (head, false),
                    Err(e) => {
                        tracing::warn!(error = %e, "event feed: cannot read the stream's head");
                        continue;
                    }
                }
            }
            loop {
                let page = match store.stream_after(last, PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "event feed: cannot read the stream");
                        break;
                    }
                };
                let full = page.len() == PAGE as usize;
                for e in page {
                    last = e.id;
                    // Nobody listening is fine.
                    let _ = self.tx.send(Fed::new(e));
                }
                if !full {
                    break;
                }
            }
        }
    }
}
