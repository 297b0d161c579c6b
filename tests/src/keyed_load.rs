//! A portal behind a load balancer, as issue 25 describes it: clients doing start+end pairs,
//! each start under its own `Idempotency-Key`, retrying a 503 (or a replica that does not
//! answer) after its `Retry-After` on the next replica with the same key until it is
//! answered, then ending the session the same way. What every client saw is tallied, so a
//! run can show what a fault cost (how long starts waited) and what it must never cost (a
//! failed start, a second game for one key, an end that did not end).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portal_client::{Client, ClientError};
use protocol::api::{Session, SessionStatus};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long one start or end may keep being retried before the client gives up on it.
const GIVE_UP: Duration = Duration::from_secs(120);
/// The longest pause between retries, whatever `Retry-After` says.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Start+end pairs completed.
    pub pairs: u64,
    /// Starts that ended in anything but a running session, with why.
    pub failed_starts: Vec<String>,
    /// Ends that did not answer 200 with an `ended` session, with why.
    pub bad_ends: Vec<String>,
    /// The sessions the clients were given, one per key.
    pub started: Vec<Session>,
    /// Each start: when it was first sent, and how long until it was answered for good.
    pub start_waits: Vec<(Instant, Duration)>,
    /// Calls tried again (a 503 or no answer).
    pub retries: u64,
    /// Why calls were tried again: the 503's code, or `no answer`; and how often.
    pub retried_for: std::collections::BTreeMap<String, u64>,
    /// When each call that was tried again was answered so.
    pub retried_at: Vec<Instant>,
}

impl Tally {
    /// The longest a start in flight at some time in `[from, to)` waited.
    pub fn longest_wait(&self, from: Instant, to: Instant) -> Duration {
        self.start_waits
            .iter()
            .filter(|(at, d)| *at < to && *at + *d > from)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// How long after `at` the first start sent after it was answered: when starts succeed
    /// again after a fault ends.
    pub fn first_success_after(&self, at: Instant) -> Option<Duration> {
        self.start_waits
            .iter()
            .filter(|(sent, _)| *sent >= at)
            .map(|(sent, d)| sent.duration_since(at) + *d)
            .min()
    }
}

/// Clients running pairs until [`KeyedLoad::finish`].
pub struct KeyedLoad {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    tally: Arc<Mutex<Tally>>,
}

/// Whether a portal behind a load balancer tries `e` again on the next replica, after how
/// long, and why (the 503's code, or `no answer`).
fn retried(e: &ClientError) -> Option<(Duration, String)> {
    match e {
        ClientError::Api {
            status: 503,
            retry_after,
            code,
            ..
        } => Some((
            Duration::from_secs(retry_after.unwrap_or(1)).min(MAX_PAUSE),
            code.as_str().to_owned(),
        )),
        ClientError::Transport { .. } => Some((Duration::from_millis(100), "no answer".to_owned())),
        _ => None,
    }
}

impl KeyedLoad {
    /// `n` clients doing pairs of `game`; client `i` starts with replica `i`, and moves to the
    /// next one at each retry.
    pub fn start(replicas: Vec<Client>, n: usize, game: &str) -> Self {
        let stop = CancellationToken::new();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut tasks = JoinSet::new();
        let replicas = Arc::new(replicas);
        for i in 0..n {
            let (stop, tally, replicas) = (stop.clone(), Arc::clone(&tally), Arc::clone(&replicas));
            let game = game.to_owned();
            tasks.spawn(async move {
                let mut next = i;
                let mut seq = 0u64;
                while !stop.is_cancelled() {
                    seq += 1;
                    let key = format!("load-{}-{i}-{seq}", std::process::id());
                    pair(&replicas, &mut next, &key, &game, &tally).await;
                }
            });
        }
        Self { stop, tasks, tally }
    }

    /// How many pairs are done so far.
    pub fn pairs(&self) -> u64 {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pairs
    }

    /// Stops the clients once their pair in progress is done, and answers what they saw.
    pub async fn finish(mut self) -> Tally {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.tally.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One start under `key` and its end, each retried on the next replica until answered.
async fn pair(replicas: &[Client], next: &mut usize, key: &str, game: &str, tally: &Mutex<Tally>) {
    let note =
        |f: &dyn Fn(&mut Tally)| f(&mut tally.lock().unwrap_or_else(PoisonError::into_inner));
    let req = crate::start(game);
    let t0 = Instant::now();
    let started = loop {
        match replicas[*next % replicas.len()]
            .start_session_idempotent(&req, key)
            .await
        {
            Ok(s) => break Ok(s),
            Err(e) => match retried(&e) {
                Some((pause, why)) if t0.elapsed() < GIVE_UP => {
                    note(&|t| {
                        t.retried_at.push(Instant::now());
                        t.retries += 1;
                        *t.retried_for.entry(why.clone()).or_default() += 1;
                    });
                    *next += 1;
                    tokio::time::sleep(pause).await;
                }
                _ => break Err(e),
            },
        }
    };
    note(&|t| t.start_waits.push((t0, t0.elapsed())));
    let s = match started {
        Ok(s) if s.status == SessionStatus::Running => s,
        Ok(s) => {
            let why = format!("{key}: session {} is {}", s.session_id, s.status);
            note(&|t| t.failed_starts.push(why.clone()));
            return;
        }
        Err(e) => {
            note(&|t| t.failed_starts.push(format!("{key}: {e}")));
            return;
        }
    };
    note(&|t| t.started.push(s.clone()));
    let t1 = Instant::now();
    loop {
        match replicas[*next % replicas.len()]
            .end_session(&s.session_id)
            .await
        {
            Ok(e) if e.status == SessionStatus::Ended => break,
            Ok(e) => {
                let why = format!("{}: ended as {}", s.session_id, e.status);
                note(&|t| t.bad_ends.push(why.clone()));
                break;
            }
            Err(e) => match retried(&e) {
                Some((pause, why)) if t1.elapsed() < GIVE_UP => {
                    note(&|t| {
                        t.retried_at.push(Instant::now());
                        t.retries += 1;
                        *t.retried_for.entry(why.clone()).or_default() += 1;
                    });
                    *next += 1;
                    tokio::time::sleep(pause).await;
                }
                _ => {
                    let why = format!("{}: {e}", s.session_id);
                    note(&|t| t.bad_ends.push(why.clone()));
                    break;
                }
            },
        }
    }
    note(&|t| t.pairs += 1);
}
