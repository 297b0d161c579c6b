//! Percentiles, the floors every figure is divided by, and what `/proc` says of a process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A sample's percentiles, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Summary {
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |p: f64| {
            if samples.is_empty() {
                return f64::NAN;
            }
            let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Self {
            n: samples.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
        }
    }

    /// Finite, positive, ordered: what a smoke run checks.
    pub fn sane(&self) -> bool {
        self.n > 0 && self.p50.is_finite() && self.p50 > 0.0 && self.p50 <= self.p99
    }
}

pub fn header() {
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "figure (µs)", "n", "p50", "p99", "p999", "p50/floor"
    );
}

pub fn row(name: &str, s: &Summary, floor_p50: Option<f64>) {
    let ratio = floor_p50.map_or(String::from("-"), |f| format!("{:.1}x", s.p50 / f));
    println!(
        "{name:<44} {:>6} {:>9.0} {:>9.0} {:>9.0} {ratio:>9}",
        s.n, s.p50, s.p99, s.p999
    );
}

/// Says whether a target is met, in one line.
pub fn verdict(what: &str, measured: String, target: String, met: bool) {
    let v = if met { "met" } else { "NOT met" };
    println!("  {what}: {measured} (target {target}): {v}");
}

/// The game program: a static C program that waits for a signal, compiled with `cc -static`
/// into `dir`; `/bin/sleep` (dynamic) when no C compiler can build it. Returns the program and
/// a description.
pub fn game_program(dir: &Path) -> (PathBuf, &'static str) {
    let src = dir.join("game.c");
    let exe = dir.join("bench-game");
    let built = std::fs::write(
        &src,
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    )
    .is_ok()
        && std::process::Command::new("cc")
            .args(["-static", "-O2", "-s", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
    if built {
        (
            exe,
            "a static C program that pauses until signalled (cc -static)",
        )
    } else {
        (
            PathBuf::from("/bin/sleep"),
            "/bin/sleep 3600 (dynamic: cc -static failed)",
        )
    }
}

/// Spawns `program` in its own group, as the agent does.
fn spawn(program: &Path) -> tokio::process::Child {
    tokio::process::Command::new(program)
        .arg("3600")
        .process_group(0)
        .spawn()
        .expect("spawn the game program")
}

/// Waits until `pid` has exec'd `program` and sleeps (bounded), looking every `every` (or
/// after each yield, when zero).
async fn wait_started(pid: u32, program: &Path, every: Duration) {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let comm = stat.split(['(', ')']).nth(1).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if name.starts_with(comm) && !comm.is_empty() && state == Some("S") {
            return;
        }
        if every.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(every).await;
        }
    }
    panic!("the game program did not start within 5 s");
}

/// Floor: a bare spawn (posix_spawn) of the game, one at a time.
pub async fn spawn_latency(program: &Path, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut child = spawn(program);
        out.push(t.elapsed());
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    out
}

/// Floor: the game's own exit, from SIGTERM to reaped, once it runs, one at a time.
pub async fn exit_latency(program: &Path, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut child = spawn(program);
        let pid = child.id().expect("pid");
        wait_started(pid, program, Duration::ZERO).await;
        let t = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait().await;
        out.push(t.elapsed());
    }
    out
}

/// When the spawn+kill+reap loops kill each game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// As soon as `posix_spawn` returns, mostly before the game's start-up has run: the
    /// issue's floor.
    AtOnce,
    /// Once the game runs (has reached its wait for a signal, looked for every millisecond),
    /// as a session's game has when it is ended: the same work as a pair's with the game's
    /// start-up in it. Not a floor the targets use.
    WhenRunning,
}

/// Floor: spawn+kill+reap loops, `parallel` at once. Returns the rate per second, and the CPU
/// per spawn+kill+reap with the steal share (see [`CpuMark`]).
pub async fn spawn_kill_reap(
    program: &Path,
    n: usize,
    parallel: usize,
    kill: Kill,
) -> (f64, (f64, f64)) {
    let per = n.div_ceil(parallel);
    let mark = CpuMark::now();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..parallel)
        .map(|_| {
            let program = program.to_owned();
            tokio::spawn(async move {
                for _ in 0..per {
                    let mut child = spawn(&program);
                    if let (Kill::WhenRunning, Some(pid)) = (kill, child.id()) {
                        wait_started(pid, &program, Duration::from_millis(1)).await;
                    }
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("spawn task");
    }
    let rate = (per * parallel) as f64 / t0.elapsed().as_secs_f64();
    (rate, mark.per_op(per * parallel))
}

/// Floor: a TCP round trip of a 32-byte frame on 127.0.0.1.
pub async fn loopback_rtt(n: usize) -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; 64];
        while let Ok(k) = s.read(&mut buf).await {
            if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                break;
            }
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = c.set_nodelay(true);
    let mut buf = [0u8; 32];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&[7u8; 32]).await.expect("write");
        c.read_exact(&mut buf).await.expect("read");
        out.push(t.elapsed());
    }
    out
}

/// The database's own floors, `n` times each: a round trip (`DO 1`), and a durable commit
/// of one small row the way the store commits (a transaction of one prepared INSERT), into a
/// table of its own that it drops afterwards.
pub async fn mysql_floor(url: &str, n: usize) -> (Summary, Summary) {
    use mysql_async::prelude::Queryable;
    let pool = mysql_async::Pool::new(url);
    let mut conn = pool.get_conn().await.expect("connect to the database");
    let mut rtt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.query_drop("DO 1").await.expect("DO 1");
        rtt.push(t.elapsed());
    }
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS arcade_bench_floor (id BIGINT PRIMARY KEY, v VARCHAR(64))",
    )
    .await
    .expect("create the floor table");
    let mut commits = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let mut tx = conn
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .expect("begin");
        tx.exec_drop(
            "INSERT INTO arcade_bench_floor (id, v) VALUES (?, ?)",
            (i as u64, "0123456789abcdef0123456789abcdef"),
        )
        .await
        .expect("insert");
        tx.commit().await.expect("commit");
        commits.push(t.elapsed());
    }
    let _ = conn.query_drop("DROP TABLE arcade_bench_floor").await;
    drop(conn);
    let _ = pool.disconnect().await;
    (Summary::of(&mut rtt), Summary::of(&mut commits))
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // Fields 14 and 15 (utime, stime), counted from field 3 just after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1))
}

/// A mark to measure a phase's CPU by: this process's CPU time and its reaped children's (the
/// games), and the machine's CPU ticks, stolen and in all, from `/proc/stat`.
///
/// Throughput on a shared VM moves with the hypervisor's steal time; CPU per operation moves
/// much less, so it is the steadier figure to compare two builds by, and the steal share says
/// how far a run's rates can be trusted.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    cpu: Duration,
    steal: u64,
    total: u64,
}

impl CpuMark {
    /// No CPU used: `per_op` from it is all this process has used.
    pub fn zero() -> Self {
        Self {
            cpu: Duration::ZERO,
            ..Self::now()
        }
    }

    pub fn now() -> Self {
        use nix::sys::resource::{getrusage, UsageWho};
        let used = |who| {
            getrusage(who).map_or(Duration::ZERO, |u| {
                let t = |tv: nix::sys::time::TimeVal| {
                    Duration::new(tv.tv_sec().max(0) as u64, tv.tv_usec().max(0) as u32 * 1000)
                };
                t(u.user_time()) + t(u.system_time())
            })
        };
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        Self {
            cpu: used(UsageWho::RUSAGE_SELF) + used(UsageWho::RUSAGE_CHILDREN),
            // user nice system idle iowait irq softirq steal guest guest_nice
            steal: ticks.get(7).copied().unwrap_or(0),
            total: ticks.iter().take(8).sum(),
        }
    }

    /// CPU used since this mark, per operation of `ops`, in µs, and the share of the
    /// machine's time the hypervisor stole meanwhile, in percent.
    pub fn per_op(&self, ops: usize) -> (f64, f64) {
        let now = Self::now();
        let cpu = now.cpu.saturating_sub(self.cpu).as_secs_f64() * 1e6 / ops.max(1) as f64;
        let total = now.total.saturating_sub(self.total).max(1) as f64;
        (
            cpu,
            100.0 * now.steal.saturating_sub(self.steal) as f64 / total,
        )
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `--mariadb`: a throwaway database's URL (as the tests make one) when `wanted`, else no
/// database; `None`, said why, when no MariaDB server is installed.
pub async fn bench_database(wanted: bool) -> Option<Option<String>> {
    if !wanted {
        return Some(None);
    }
    let url = tests::mariadb::database().await;
    if url.is_none() {
        println!("--mariadb: no MariaDB server program (mariadbd) found");
    }
    url.map(Some)
}

/// The store at `url` (MySQL), or a memory store; `None`, said why, when it cannot be opened.
pub async fn open_store(url: Option<&str>) -> Option<broker::store::Store> {
    match url {
        Some(url) => match broker::store::mysql::MysqlStore::connect(url).await {
            Ok(m) => Some(broker::store::Store::Mysql(m)),
            Err(e) => {
                println!("cannot connect to the bench's MariaDB: {e}");
                None
            }
        },
        None => Some(broker::store::Store::memory()),
    }
}
