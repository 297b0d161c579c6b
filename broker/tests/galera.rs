//! The store survives a database node's death (issue 30): three real `arcade-broker`
//! replicas, each on its own node of a throwaway three-node MariaDB Galera cluster (each given
//! every node, its own first), under a portal's keyed load, while a node is killed with
//! `kill -9` and then rejoins by IST, or hangs (`SIGSTOP`) and then goes on.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::store::mysql::MysqlStore;
use broker::store::Store;
use tests::cluster::{violations, Cluster, HEARTBEAT_TIMEOUT, WAIT};
use tests::galera::Galera;
use tests::keyed_load::KeyedLoad;
use tests::wait_until;
use tokio_util::sync::CancellationToken;

/// A throwaway three-node cluster with a database, and three replicas on it, replica `i` given
/// every node with node `i` first; `None` outside CI without Galera.
async fn replicas_on_galera() -> Option<(Galera, Cluster, [String; 3])> {
    let galera = tokio::task::spawn_blocking(Galera::start).await.unwrap()?;
    galera.create_database("arcade");
    let dbs = [0, 1, 2].map(|i| galera.url_from(i, "arcade"));
    let c = Cluster::start_on(dbs.clone(), HEARTBEAT_TIMEOUT).await?;
    Some((galera, c, dbs))
}

/// Node 0 failed at `from`: waits until replica b1 has left it (in its log, then in its
/// `/readyz` once the cluster answers again; while the cluster stalls, a call through any node
/// may time out and move its broker on again, so any other node will do) and the other nodes
/// have evicted it. Answers how long after `from` b1 moved, and the node was evicted.
async fn node_0_left(c: &Cluster, galera: &Galera, from: Instant) -> (Duration, Duration) {
    let log = c.replicas[0].log.clone();
    wait_until("b1 logging its move to another node", WAIT, || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("database node failed: moving to the next")
    })
    .await;
    let moved = from.elapsed();
    let node0 = format!("127.0.0.1:{}", galera.port(0));
    let b1 = c.client(0);
    wait_until("b1's /readyz naming another node", WAIT, || async {
        b1.ready()
            .await
            .is_ok_and(|r| r.database.is_some_and(|d| d != node0))
    })
    .await;
    tokio::task::block_in_place(|| galera.wait_evicted(0));
    (moved, from.elapsed())
}

async fn pairs_done(load: &KeyedLoad, more: u64) {
    let want = load.pairs() + more;
    wait_until(&format!("{want} pairs done"), WAIT * 2, || async {
        load.pairs() >= want
    })
    .await;
}

/// Every event id the store has, in order (through node `via`'s URL).
async fn stored_event_ids(url: &str) -> Vec<u64> {
    let store = Store::Mysql(MysqlStore::connect(url).await.unwrap());
    let mut ids = Vec::new();
    loop {
        let after = ids.last().copied().unwrap_or(0);
        let page = store.stream_after(after, 1000).await.unwrap();
        if page.is_empty() {
            return ids;
        }
        ids.extend(page.iter().map(|e| e.id));
    }
}

/// Issue 30's run: 8 clients doing start+end pairs under `Idempotency-Key`s through three
/// replicas on three Galera nodes; node 0 (replica `b1`'s) is killed with `kill -9`, then
/// started again and rejoins by IST. No acknowledged session is lost, no key runs two games,
/// every end ends, no start fails but by a 503 retried after its `Retry-After`, `b1` moves to
/// another node (in its log and `/readyz`), and the event stream stays gapless, live (read
/// as a client does, resuming after its last event when a stream breaks) and stored. Prints
/// how long the eviction window was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_node_killed_and_rejoined_under_keyed_load_loses_nothing() {
    let Some((mut galera, c, dbs)) = replicas_on_galera().await else {
        return;
    };
    let node0 = format!("127.0.0.1:{}", galera.port(0));
    assert_eq!(c.client(0).ready().await.unwrap().database, Some(node0));

    // A live reader of the event stream through replica b3, from the first event. As a
    // client does, it resumes after the last event it saw when its stream breaks (a stream
    // that must read the store while the cluster stalls is closed).
    let stop = CancellationToken::new();
    let live = Arc::new(Mutex::new(Vec::new()));
    let reader = tokio::spawn({
        let (stop, live, client) = (stop.clone(), Arc::clone(&live), c.client(2));
        async move {
            let mut resumed = 0u32;
            loop {
                let after = live.lock().unwrap().last().copied().unwrap_or(0);
                let mut stream = tokio::select! {
                    () = stop.cancelled() => return resumed,
                    s = client.events(&[], None, None, Some(after)) => match s {
                        Ok(s) => s,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return resumed,
                        e = stream.next() => match e {
                            Some(Ok(e)) => live.lock().unwrap().push(e.id),
                            _ => break,
                        },
                    }
                }
                resumed += 1;
            }
        }
    });

    let load = KeyedLoad::start((0..3).map(|i| c.client(i)).collect(), 8, "sleeper");
    pairs_done(&load, 10).await;

    let killed = Instant::now();
    tokio::task::block_in_place(|| galera.kill(0));
    let (moved, evicted) = node_0_left(&c, &galera, killed).await;
    pairs_done(&load, 10).await;

    let rejoin = Instant::now();
    let ist = tokio::task::block_in_place(|| galera.restart(0));
    assert!(ist, "node 0 rejoined by a full SST, not IST");
    let rejoined = rejoin.elapsed();
    pairs_done(&load, 10).await;
    let tally = load.finish().await;

    // A start or end was refused only with a 503 (and its Retry-After), and only while the
    // cluster evicted the node: a call sent in that window is answered at most a store call's
    // bound (5 s) after it.
    let window_end = killed + evicted + broker::store::mysql::CALL_TIMEOUT + Duration::from_secs(1);
    assert!(
        tally.retried_for.keys().all(|why| why != "no answer"),
        "{:?}",
        tally.retried_for
    );
    assert!(
        tally
            .retried_at
            .iter()
            .all(|at| *at >= killed && *at <= window_end),
        "a call refused outside the eviction window"
    );
    let found = violations(&c, 1, &tally).await;
    assert!(found.is_empty(), "{found:#?}");
    let keys: HashSet<_> = tally.started.iter().map(|s| &s.session_id).collect();
    assert_eq!(keys.len(), tally.started.len(), "a session given twice");
    assert!(tally.pairs >= 30, "{} pairs", tally.pairs);
    // How much the nodes contended: tries made again after losing a race, on every replica.
    let mut conflicts = 0.0;
    for r in &c.replicas {
        conflicts += r
            .metric("arcade_store_call_conflicts_total")
            .await
            .expect("the conflicts counter on /metrics");
    }

    // Gapless: the live reader saw 1, 2, 3, ... and the store has the same numbers.
    let stored = stored_event_ids(&dbs[1]).await;
    assert_eq!(stored, (1..=stored.len() as u64).collect::<Vec<_>>());
    wait_until("the live reader has every event", WAIT, || async {
        live.lock().unwrap().len() >= stored.len()
    })
    .await;
    stop.cancel();
    let resumed = reader.await.unwrap();
    let live = live.lock().unwrap().clone();
    assert_eq!(live, stored, "the live reader's events are not the store's");

    eprintln!(
        "node 0 killed: b1 moved to another node after {moved:?}; node 0 evicted after \
         {evicted:?}; rejoined by IST in {rejoined:?}; longest start wait in the eviction: {:?}; \
         retries: {:?}; {} pairs, {} live events ({resumed} resumptions), {} stored; \
         {conflicts} store tries made again after a conflict",
        tally.longest_wait(killed, killed + evicted),
        tally.retried_for,
        tally.pairs,
        live.len(),
        stored.len(),
    );
}

/// A node that hangs (`SIGSTOP`) rather than dies: its connections stay open and silent. Under
/// the same load, the replica on it moves to another node once a call outlasts its bound, the
/// other nodes evict it, and once it goes on it rejoins by itself. Nothing is lost, no key runs
/// two games, and the stored event stream is gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_database_node_is_left_and_rejoins_under_keyed_load() {
    let Some((galera, c, dbs)) = replicas_on_galera().await else {
        return;
    };
    let load = KeyedLoad::start((0..3).map(|i| c.client(i)).collect(), 8, "sleeper");
    pairs_done(&load, 10).await;

    let paused = Instant::now();
    galera.pause(0);
    let (moved, evicted) = node_0_left(&c, &galera, paused).await;
    pairs_done(&load, 10).await;
    galera.resume(0);
    let resumed = Instant::now();
    tokio::task::block_in_place(|| galera.wait_rejoined(0));
    let rejoined = resumed.elapsed();
    pairs_done(&load, 10).await;
    let tally = load.finish().await;

    let found = violations(&c, 1, &tally).await;
    assert!(found.is_empty(), "{found:#?}");
    let keys: HashSet<_> = tally.started.iter().map(|s| &s.session_id).collect();
    assert_eq!(keys.len(), tally.started.len(), "a session given twice");
    assert!(
        tally.retried_for.keys().all(|why| why != "no answer"),
        "{:?}",
        tally.retried_for
    );
    let stored = stored_event_ids(&dbs[0]).await;
    assert_eq!(stored, (1..=stored.len() as u64).collect::<Vec<_>>());
    eprintln!(
        "node 0 hung: b1 moved to another node after {moved:?}; node 0 evicted after \
         {evicted:?}; resumed, it rejoined in {rejoined:?}; longest start wait: {:?}; \
         retries: {:?}; {} pairs, {} events",
        tally.longest_wait(paused, paused + evicted),
        tally.retried_for,
        tally.pairs,
        stored.len(),
    );
}
