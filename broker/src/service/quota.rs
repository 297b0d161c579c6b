//! Per-user quotas (`--max-sessions-per-user`): a start naming a `user_id` that already holds
//! that many sessions not over is refused (429, naming them), exactly, however many starts of
//! the user arrive at once.
//!
//! The check and the reservation must be one step, and the user's recorded sessions are in the
//! store, read in between. So the starts of one user take turns for that step — a per-user
//! async lock held for one store read, never across a launch — and a start holds a ticket
//! (its new session's id) until its outcome is recorded. The count is the user's live
//! sessions in the store together with the tickets, each session once. With replicas, the
//! replica's claim counts in the transaction that records the session instead.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use protocol::api::MAX_USER_ID_CHARS;
use protocol::SessionId;

use super::Service;
use crate::error::Error;

/// The users' turns and their starts in flight.
#[derive(Debug, Default)]
pub(super) struct Quotas {
    /// Each user with a start checking its quota now.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Each user's starts in flight: their sessions' ids.
    tickets: Mutex<HashMap<String, BTreeSet<SessionId>>>,
}

/// A start's place in its user's count until its outcome is recorded; given back on drop.
#[derive(Debug)]
pub(super) struct Ticket<'a> {
    quotas: &'a Quotas,
    user: String,
    id: SessionId,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut tickets = self
            .quotas
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = tickets.get_mut(&self.user) {
            held.remove(&self.id);
            if held.is_empty() {
                tickets.remove(&self.user);
            }
        }
    }
}

/// A `user_id`: 1 to [`MAX_USER_ID_CHARS`] characters, none of them a control character.
pub(super) fn check_user(user: Option<&str>) -> Result<(), Error> {
    match user {
        Some(u)
            if u.is_empty()
                || u.chars().count() > MAX_USER_ID_CHARS
                || u.chars().any(char::is_control) =>
        {
            Err(Error::Invalid(format!(
                "user_id must be 1 to {MAX_USER_ID_CHARS} characters without control characters"
            )))
        }
        _ => Ok(()),
    }
}

impl Quotas {
    fn turn(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(turns.entry(user.to_owned()).or_default())
    }

    /// Forgets a user's turn once nobody waits for it.
    fn done(&self, user: &str) {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        if turns.get(user).is_some_and(|t| Arc::strong_count(t) == 1) {
            turns.remove(user);
        }
    }

    fn tickets_of(&self, user: &str) -> BTreeSet<SessionId> {
        self.tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .cloned()
            .unwrap_or_default()
    }
}

impl Service {
    /// The refusal of a start of `user`, naming the sessions it holds (as the store has them
    /// now).
    pub(super) async fn quota_exceeded(&self, user: Option<&str>) -> Error {
        let user = user.unwrap_or_default();
        match self.store.live_of_user(user).await {
            Ok(sessions) => Error::QuotaExceeded {
                user: user.to_owned(),
                sessions,
            },
            Err(e) => e.into(),
        }
    }

    /// Takes a ticket for a new session `id` of `user`, or refuses with the sessions the user
    /// holds (see the module's doc). `None` when no quota applies.
    pub(super) async fn take_ticket(
        &self,
        user: Option<&str>,
        id: &SessionId,
    ) -> Result<Option<Ticket<'_>>, Error> {
        let (Some(user), Some(max)) = (user, self.settings.max_sessions_per_user) else {
            return Ok(None);
        };
        if self.replicas.is_some() {
            return Ok(None);
        }
        let turn = self.quotas.turn(user);
        let counted = {
            let _mine = turn.lock().await;
            let mut held: BTreeSet<SessionId> = self
                .store
                .live_of_user(user)
                .await
                .map_err(Error::from)?
                .into_iter()
                .collect();
            held.extend(self.quotas.tickets_of(user));
            if held.len() >= max as usize {
                Err(Error::QuotaExceeded {
                    user: user.to_owned(),
                    sessions: held.into_iter().collect(),
                })
            } else {
                self.quotas
                    .tickets
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(user.to_owned())
                    .or_default()
                    .insert(id.clone());
                Ok(Some(Ticket {
                    quotas: &self.quotas,
                    user: user.to_owned(),
                    id: id.clone(),
                }))
            }
        };
        drop(turn);
        self.quotas.done(user);
        counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_bounded_and_printable() {
        assert!(check_user(None).is_ok());
        assert!(check_user(Some("player-42")).is_ok());
        assert!(check_user(Some(&"é".repeat(MAX_USER_ID_CHARS))).is_ok());
        for bad in ["", "a\nb", &"x".repeat(MAX_USER_ID_CHARS + 1)] {
            assert!(
                matches!(check_user(Some(bad)), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_ticket_is_given_back_when_dropped() {
        let q = Quotas::default();
        let id = SessionId::new("s1").unwrap();
        q.tickets
            .lock()
            .unwrap()
            .entry("u".into())
            .or_default()
            .insert(id.clone());
        let t = Ticket {
            quotas: &q,
            user: "u".into(),
            id,
        };
        assert_eq!(q.tickets_of("u").len(), 1);
        drop(t);
        assert!(q.tickets_of("u").is_empty());
        assert!(q.tickets.lock().unwrap().is_empty());
    }
}
