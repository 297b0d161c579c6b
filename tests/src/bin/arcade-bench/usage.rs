//! `arcade-bench usage`: `GET /v1/usage`'s query on MariaDB over a history of 1,000,000
//! sessions (issue 28): one month's usage by user, by game, and one user's, each timed
//! against the floor of a point read of one session (`store.get`, a primary-key lookup) in
//! the same run, with the server's `EXPLAIN` of the month's query by user.
//!
//! The history is written straight into a throwaway MariaDB's `sessions` table (the
//! broker's schema, made by the store itself), in batches: 1,000,000 sessions spread over a
//! year, of 1,000 users, 20 games and 200 hosts, 5 minutes to 3 hours each, a third of them
//! with a GPU. Goal: the month's query by user p50 <= 200 ms.

use std::time::{Duration, Instant};

use broker::store::mysql::MysqlStore;
use broker::store::usage::UsageWindow;
use broker::store::Store;
use mysql_async::prelude::Queryable;
use protocol::api::UsageBy;
use protocol::SessionId;
use time::OffsetDateTime;

use crate::stats::{row, verdict, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// Sessions in the history.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Queries timed per figure.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

/// Rows per INSERT.
const BATCH: usize = 2_000;

/// Writes `n` ended sessions over the year before `now`.
async fn fill(url: &str, n: usize, now: OffsetDateTime) -> Result<(), mysql_async::Error> {
    let pool = mysql_async::Pool::new(url);
    let mut conn = pool.get_conn().await?;
    let mut i = 0;
    while i < n {
        let upto = (i + BATCH).min(n);
        let mut sql = String::from(
            "INSERT INTO sessions (session_id, game_id, mode, status, host_id, created_at, \
             started_at, ended_at, end_reason, user_id, slots, gpu_count) VALUES ",
        );
        for k in i..upto {
            // Spread evenly over 365 days, with a little jitter; 5 min to 3 h each.
            let back = time::Duration::seconds(
                ((k as i64) * 31_536_000) / n as i64 + (k as i64 * 7919) % 600,
            );
            let created = now - back;
            let started = created + time::Duration::seconds(1);
            let ended = started + time::Duration::seconds(300 + (k as i64 * 104_729) % 10_500);
            let fmt = |t: OffsetDateTime| {
                format!(
                    "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.microsecond()
                )
            };
            if k > i {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('bench-{k}', 'game-{}', 'default', 'ended', 'host-{}', {}, {}, {}, \
                 'ended_by_request', 'user-{}', 1, {})",
                k % 20,
                k % 200,
                fmt(created),
                fmt(started),
                fmt(ended),
                (k * 7) % 1000,
                u8::from(k % 3 == 0)
            ));
        }
        conn.query_drop(sql).await?;
        i = upto;
    }
    conn.query_drop("ANALYZE TABLE sessions").await?;
    drop(conn);
    pool.disconnect().await
}

/// `runs` timings of `f`.
async fn time<F, Fut, T>(runs: usize, mut f: F) -> Summary
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let mut v: Vec<Duration> = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        if f().await.is_some() {
            v.push(t0.elapsed());
        }
    }
    Summary::of(&mut v)
}

pub async fn run(a: Args) -> bool {
    let (rows, runs) = if a.smoke {
        (20_000, 3)
    } else {
        (a.rows, a.runs)
    };
    let Some(url) = tests::mariadb::database().await else {
        println!("no MariaDB server program (mariadbd): install mariadb-server");
        return false;
    };
    let mysql = match MysqlStore::connect(&url).await {
        Ok(m) => m,
        Err(e) => {
            println!("cannot open the store: {e}");
            return false;
        }
    };
    let now = OffsetDateTime::now_utc();
    let t0 = Instant::now();
    if let Err(e) = fill(&url, rows, now).await {
        println!("cannot fill the history: {e}");
        return false;
    }
    println!(
        "{rows} sessions written in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let month = |by: UsageBy, user: Option<&str>| UsageWindow {
        from: now - time::Duration::days(30),
        to: now,
        now,
        by,
        user_id: user.map(str::to_owned),
        game_id: None,
    };
    let plan = mysql.explain_usage(&month(UsageBy::User, None)).await;
    let store = Store::Mysql(mysql);
    let probe = SessionId::new(format!("bench-{}", rows / 2)).expect("id");
    let floor = time(runs * 5, || async { store.get(&probe).await.ok() }).await;
    let by_user = time(runs, || async {
        store.usage(&month(UsageBy::User, None)).await.ok()
    })
    .await;
    let by_game = time(runs, || async {
        store.usage(&month(UsageBy::Game, None)).await.ok()
    })
    .await;
    let one_user = time(runs, || async {
        store
            .usage(&month(UsageBy::Game, Some("user-7")))
            .await
            .ok()
    })
    .await;
    let users = store
        .usage(&month(UsageBy::User, None))
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    println!();
    println!("EXPLAIN of one month's usage by user:");
    match &plan {
        Ok(lines) => lines.iter().for_each(|l| println!("  {l}")),
        Err(e) => println!("  cannot explain: {e}"),
    }
    println!();
    crate::stats::header();
    row("floor: one session by id (store.get)", &floor, None);
    row("one month by user", &by_user, Some(floor.p50));
    row("one month by game", &by_game, Some(floor.p50));
    row("one month of one user, by game", &one_user, Some(floor.p50));
    println!("  {users} users had usage in the month");
    verdict(
        "one month by user, p50",
        format!("{:.0} ms", by_user.p50 / 1000.0),
        "<= 200 ms".into(),
        by_user.p50 <= 200_000.0,
    );
    let uses_index = plan
        .as_ref()
        .is_ok_and(|l| l.iter().any(|l| l.contains("key=sessions_usage")));
    println!("  the query reads the index sessions_usage: {uses_index}");
    floor.sane() && by_user.sane() && by_game.sane() && one_user.sane() && users > 0 && uses_index
}
