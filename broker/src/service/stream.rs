//! The event stream as a service: a client's stream of events from a number on, filtered,
//! with none missed or repeated; and the host events (online, offline, draining, resumed).
//!
//! A stream first reads the store from the client's number (its `Last-Event-ID`), then
//! follows the [`Feed`](crate::events::Feed); whenever the feed's numbers jump (it fell
//! behind) it reads the store again. Each stream runs as a tracked task that ends when its
//! client goes away or the broker stops.

use std::sync::Arc;

use protocol::api::{Event, EventType, HostStatus};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};

use super::Service;
use crate::error::Error;
use crate::events::{Fed, PAGE};
use crate::session::Actor;

/// Events queued per stream for its client.
const STREAM_QUEUE: usize = 64;

/// Which events a stream carries, and from where.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only these types (`None`: all).
    pub types: Option<Vec<EventType>>,
    /// Only this session's.
    pub session_id: Option<SessionId>,
    /// Only this host's (its own events and its sessions').
    pub host_id: Option<HostId>,
    /// Every event numbered above this; `None`: from now on.
    pub after: Option<u64>,
}

impl EventQuery {
    /// Whether `e` passes the filters.
    pub fn matches(&self, e: &Event) -> bool {
        let host = e
            .session
            .as_ref()
            .map(|s| &s.host_id)
            .or(e.host.as_ref().map(|h| &h.host_id));
        self.types.as_ref().is_none_or(|t| t.contains(&e.kind))
            && self
                .session_id
                .as_ref()
                .is_none_or(|id| e.session.as_ref().is_some_and(|s| &s.session_id == id))
            && self.host_id.as_ref().is_none_or(|id| host == Some(id))
    }
}

/// Where a stream is.
enum Next {
    /// Keep going.
    Go,
    /// The client went away, or the broker stops.
    Stop,
}

impl Service {
    /// Opens a stream of the events `q` asks for. Refused (503) past the streams a broker
    /// serves at once.
    pub async fn event_stream(
        self: &Arc<Self>,
        q: EventQuery,
    ) -> Result<mpsc::Receiver<Arc<Fed>>, Error> {
        let permit = Arc::clone(&self.streams)
            .try_acquire_owned()
            .map_err(|_| Error::TooManyStreams)?;
        // Before the first read, so nothing committed meanwhile falls between the two.
        let live = self.feed.subscribe();
        let after = match q.after {
            Some(a) => a,
            None => self.store.stream_head().await?,
        };
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let svc = Arc::clone(self);
        self.tasks.spawn_on(
            async move {
                svc.follow(q, after, live, tx).await;
                drop(permit);
            },
            &self.runtime,
        );
        Ok(rx)
    }

    async fn follow(
        &self,
        q: EventQuery,
        mut last: u64,
        mut live: broadcast::Receiver<Arc<Fed>>,
        tx: mpsc::Sender<Arc<Fed>>,
    ) {
        if let Next::Stop = self.catch_up(&q, &mut last, &tx).await {
            return;
        }
        loop {
            let next = tokio::select! {
                () = self.closing.cancelled() => return,
                () = tx.closed() => return,
                e = live.recv() => e,
            };
            let step = match next {
                Ok(f) if f.event.id <= last => Next::Go,
                Ok(f) if f.event.id == last + 1 => {
                    last = f.event.id;
                    if q.matches(&f.event) && tx.send(f).await.is_err() {
                        Next::Stop
                    } else {
                        Next::Go
                    }
                }
                // Behind the feed: the store has what was missed.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.catch_up(&q, &mut last, &tx).await
                }
                Err(broadcast::error::RecvError::Closed) => Next::Stop,
            };
            if let Next::Stop = step {
                return;
            }
        }
    }

    /// Sends what the store has after `last`, in order.
    async fn catch_up(&self, q: &EventQuery, last: &mut u64, tx: &mpsc::Sender<Arc<Fed>>) -> Next {
        loop {
            let page = match self.store.stream_after(*last, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    // The client reconnects with its Last-Event-ID and loses nothing.
                    tracing::warn!(error = %e, "event stream: cannot read the store; closing it");
                    return Next::Stop;
                }
            };
            let full = page.len() == PAGE as usize;
            for e in page {
                *last = e.id;
                if q.matches(&e) && tx.send(Fed::new(e)).await.is_err() {
                    return Next::Stop;
                }
            }
            if !full {
                return Next::Go;
            }
        }
    }

    /// Records a host event: the host as it now is, and who caused it.
    pub(super) async fn host_event(&self, host: &HostId, kind: EventType, actor: Actor) {
        let found = match self.hosts().await {
            Ok(hosts) => hosts.into_iter().find(|h| &h.host_id == host),
            Err(e) => {
                tracing::warn!(%host, error = %e, "cannot record a host event");
                return;
            }
        };
        let Some(mut h) = found else { return };
        if kind == EventType::HostOffline {
            // As it is once gone (the view may lag the disconnect).
            h.status = HostStatus::Offline;
            h.broker_id = None;
        }
        match self
            .store
            .append_host_event(kind, &h, actor, OffsetDateTime::now_utc())
            .await
        {
            Ok(()) => self.feed.wake(),
            Err(e) => tracing::warn!(%host, error = %e, "cannot record a host event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::{Host, Session};

    fn session_event(kind: EventType, session: &str, host: &str) -> Event {
        let s: Session = crate::session::new_session(
            SessionId::new(session).unwrap(),
            protocol::GameId::new("g").unwrap(),
            "m".into(),
            None,
            HostId::new(host).unwrap(),
            OffsetDateTime::UNIX_EPOCH,
        );
        Event {
            id: 1,
            kind,
            at: OffsetDateTime::UNIX_EPOCH,
            actor: "api".into(),
            session: Some(s),
            host: None,
        }
    }

    #[test]
    fn filters_combine_by_type_session_and_host() {
        let e = session_event(EventType::SessionEnded, "s1", "h1");
        let q = |types: Option<Vec<EventType>>, s: Option<&str>, h: Option<&str>| EventQuery {
            types,
            session_id: s.map(|s| SessionId::new(s).unwrap()),
            host_id: h.map(|h| HostId::new(h).unwrap()),
            after: None,
        };
        assert!(q(None, None, None).matches(&e));
        assert!(q(Some(vec![EventType::SessionEnded]), Some("s1"), Some("h1")).matches(&e));
        assert!(!q(Some(vec![EventType::SessionCreated]), None, None).matches(&e));
        assert!(!q(None, Some("s2"), None).matches(&e));
        assert!(!q(None, None, Some("h2")).matches(&e));
        let host_event = Event {
            session: None,
            host: Some(Host {
                host_id: HostId::new("h1").unwrap(),
                ip: [127, 0, 0, 1].into(),
                status: HostStatus::Online,
                max_sessions: 1,
                sessions: 0,
                cpu_percent: 0.0,
                mem_used_bytes: 0,
                mem_total_bytes: 0,
                games: vec![],
                last_seen: OffsetDateTime::UNIX_EPOCH,
                broker_id: None,
            }),
            kind: EventType::HostOnline,
            ..e
        };
        assert!(q(None, None, Some("h1")).matches(&host_event));
        assert!(!q(None, Some("s1"), None).matches(&host_event));
    }
}
