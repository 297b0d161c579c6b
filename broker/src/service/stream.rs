//! The event stream as a service: a client's stream of events from a number on, filtered,
//! with none missed or repeated; and the host events (online, offline, draining, resumed).
//!
//! A stream first reads the store from the client's number (its `Last-Event-ID`), then
//! follows the [`Feed`](crate::events::Feed); whenever the feed's numbers jump (it fell
//! behind) it reads the store again. A stream is polled by its client's response, and ends
//! when its client goes away (the response is dropped) or the broker stops.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use protocol::api::{Event, EventType, HostStatus};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::sync::{broadcast, OwnedSemaphorePermit};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Service;
use crate::error::Error;
use crate::events::{Fed, PAGE};
use crate::session::Actor;

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

/// One client's stream of events: what the store has after its starting number, then the
/// feed's events as they come, filtered. Polled by the client's response itself (no task of
/// its own, no queue between): an event reaches a client through one hop.
#[derive(Debug)]
pub struct Events {
    svc: Arc<Service>,
    q: EventQuery,
    /// The number of the last event seen (sent or filtered out).
    last: u64,
    live: broadcast::Receiver<Arc<Fed>>,
    /// Events read from the store, to send before anything live.
    backlog: VecDeque<Arc<Fed>>,
    /// Whether the store may have events after `last` that the feed will not bring.
    behind: bool,
    /// Ended (the broker stops, or the store could not be read).
    done: bool,
    /// Fires when the broker stops: kept across events, so waiting for one does not register
    /// with the token anew each time.
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    /// This stream's place among the streams a broker serves at once.
    _permit: OwnedSemaphorePermit,
}

impl Events {
    /// The next event, waiting for it; `None` once the stream is over (the broker stops, or
    /// the store cannot be read: the client reconnects with its `Last-Event-ID` and loses
    /// nothing).
    pub async fn next(&mut self) -> Option<Arc<Fed>> {
        loop {
            if let Some(f) = self.ready().await {
                return Some(f);
            }
            if self.done {
                return None;
            }
            let received = tokio::select! {
                () = self.closing.as_mut() => {
                    self.done = true;
                    return None;
                }
                r = self.live.recv() => r,
            };
            if let Some(f) = self.take(received) {
                return Some(f);
            }
        }
    }

    /// The next event if one is ready now, without waiting (to write several at once).
    pub fn try_next(&mut self) -> Option<Arc<Fed>> {
        loop {
            if let Some(f) = self.backlog.pop_front() {
                return Some(f);
            }
            if self.behind || self.done {
                return None;
            }
            match self.live.try_recv() {
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Ok(f) => {
                    if let Some(f) = self.take(Ok(f)) {
                        return Some(f);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.take(Err(broadcast::error::RecvError::Lagged(n)));
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.take(Err(broadcast::error::RecvError::Closed));
                }
            }
        }
    }

    /// An event from the backlog, after reading the store if the stream is behind.
    async fn ready(&mut self) -> Option<Arc<Fed>> {
        while self.backlog.is_empty() && self.behind && !self.done {
            self.catch_up().await;
        }
        self.backlog.pop_front()
    }

    /// What a live event means for the stream: the event to send, or nothing (seen already,
    /// filtered out, or the feed jumped and the store must be read).
    fn take(
        &mut self,
        received: Result<Arc<Fed>, broadcast::error::RecvError>,
    ) -> Option<Arc<Fed>> {
        match received {
            Ok(f) if f.event.id <= self.last => None,
            Ok(f) if f.event.id == self.last + 1 => {
                self.last = f.event.id;
                self.q.matches(&f.event).then_some(f)
            }
            // Behind the feed: the store has what was missed.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.behind = true;
                None
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.done = true;
                None
            }
        }
    }

    /// Reads one page of what the store has after `last` into the backlog.
    async fn catch_up(&mut self) {
        let page = match self.svc.store.stream_after(self.last, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "event stream: cannot read the store; closing it");
                self.done = true;
                return;
            }
        };
        self.behind = page.len() == PAGE as usize;
        for e in page {
            self.last = e.id;
            if self.q.matches(&e) {
                self.backlog.push_back(Fed::new(e));
            }
        }
    }
}

impl Service {
    /// Opens a stream of the events `q` asks for. Refused (503) past the streams a broker
    /// serves at once.
    pub async fn event_stream(self: &Arc<Self>, q: EventQuery) -> Result<Events, Error> {
        let permit = Arc::clone(&self.streams)
            .try_acquire_owned()
            .map_err(|_| Error::TooManyStreams)?;
        // Before the first read, so nothing committed meanwhile falls between the two.
        let live = self.feed.subscribe();
        let last = match q.after {
            Some(a) => a,
            None => self.store.stream_head().await?,
        };
        Ok(Events {
            svc: Arc::clone(self),
            q,
            last,
            live,
            backlog: VecDeque::new(),
            behind: true,
            done: false,
            closing: Box::pin(self.closing.clone().cancelled_owned()),
            _permit: permit,
        })
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
            game: None,
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
                labels: Default::default(),
                gpus: vec![],
                gpus_used: 0,
                slots_used: 0,
            }),
            kind: EventType::HostOnline,
            ..e
        };
        assert!(q(None, None, Some("h1")).matches(&host_event));
        assert!(!q(None, Some("s1"), None).matches(&host_event));
    }
}
