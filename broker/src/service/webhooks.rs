//! Running the webhook deliveries: one loop per receiver, from its cursor in the store, on
//! the one replica holding the `webhooks` lease (always, for a broker alone).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Service;
use crate::events::webhooks::{Deliverer, Delivery};
use crate::events::{Fed, PAGE};

/// How often a receiver's loop looks for new events without being woken, and retries the
/// store or the lease.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// The lease of the webhook deliveries among replicas.
const WEBHOOK_LEASE: &str = "webhooks";

impl Service {
    /// Delivers events to every receiver until `shutdown` fires.
    pub async fn run_webhooks(self: Arc<Self>, d: Arc<Deliverer>, shutdown: CancellationToken) {
        // Concurrently, in this (tracked) task.
        let loops = d
            .urls()
            .iter()
            .map(|url| self.deliver_to(&d, url, &shutdown));
        futures::future::join_all(loops).await;
    }

    /// One receiver's loop: the events after its cursor, in order, one at a time.
    async fn deliver_to(&self, d: &Deliverer, url: &str, stop: &CancellationToken) {
        let mut wake = self.feed.subscribe();
        loop {
            if self.holds_lease(WEBHOOK_LEASE, IDLE_POLL * 4).await {
                match self.deliver_page(d, url, stop).await {
                    Ok(true) => continue, // More may be there.
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%url, error = %e, "webhooks: cannot use the store"),
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                _ = wake.recv() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// Delivers one page of events after `url`'s cursor; `true` when the page was full.
    async fn deliver_page(
        &self,
        d: &Deliverer,
        url: &str,
        stop: &CancellationToken,
    ) -> Result<bool, crate::store::StoreError> {
        let cursor = match self.store.webhook_cursor(url).await? {
            Some(c) => c,
            None => {
                // A new receiver gets the events from now on, not the whole history.
                let head = self.store.stream_head().await?;
                self.store.set_webhook_cursor(url, head).await?;
                head
            }
        };
        let page = self.store.stream_after(cursor, PAGE).await?;
        let full = page.len() == PAGE as usize;
        let oldest = page.iter().find(|e| d.wants(e.kind)).map(|e| e.at);
        self.note_backlog(url, oldest);
        for e in page {
            let id = e.id;
            if d.wants(e.kind) {
                let fed = Fed::new(e);
                match d.deliver(url, id, fed.event.at, &fed.json, stop).await {
                    Delivery::Delivered | Delivery::GaveUp => {}
                    Delivery::Stopped => return Ok(false),
                }
            }
            self.store.set_webhook_cursor(url, id).await?;
        }
        if !full {
            self.note_backlog(url, None);
        }
        Ok(full)
    }

    /// Notes when `url`'s oldest undelivered event happened, for the metrics.
    fn note_backlog(&self, url: &str, oldest: Option<time::OffsetDateTime>) {
        self.webhook_backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(url.to_owned(), oldest);
    }
}
