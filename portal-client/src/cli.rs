//! The `arcade` command line: `arcade [--url URL] [--api-key KEY] [--json] COMMAND`.
//!
//! [`Cli`] is the clap parser; [`run`] runs one command against the broker and writes what it
//! answered to any [`Write`]: aligned text tables for people, or with `--json` the API's JSON
//! (pretty-printed) for scripts. A failure is a [`CliError`], which [`error_line`] turns into
//! the one line `arcade` prints on stderr before exiting with status 1.

use std::error::Error as _;
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};
use protocol::api::{
    EventType, Game, Host, HostStatus, Pool, PoolSpec, Session, SessionQuery, SessionStatus,
    StartSession, MAX_LIST_LIMIT, MAX_POOL_SIZE,
};
use protocol::{GameId, HostId, IdError, PoolId, SessionId};
use serde::Serialize;
use time::OffsetDateTime;

use crate::client::{Client, ClientError};
use crate::follow::{follow, Follow};
use crate::serde_name;

/// The broker's URL when neither `--url` nor `ARCADE_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Start, list and end Arcade game sessions; list, drain and resume hosts.
#[derive(Debug, Clone, Parser)]
#[command(name = "arcade", version, long_about = None)]
pub struct Cli {
    /// The broker's HTTP API.
    #[arg(long, global = true, env = "ARCADE_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,

    /// API key, sent as `Authorization: Bearer KEY` (needed when the broker has keys configured).
    #[arg(
        long,
        global = true,
        env = "ARCADE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Also trust this CA certificate (PEM) for an https:// broker.
    #[arg(long, global = true, env = "ARCADE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// Print the API's JSON instead of a table, for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `arcade`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Start a game and print where to connect to it.
    Start {
        /// The game, as listed by `arcade games`.
        game: String,
        /// One of the game's modes (default: its first).
        #[arg(long, value_name = "M")]
        mode: Option<String>,
        /// A config file inside the game's config directory (default: the game's own).
        #[arg(long, value_name = "C")]
        config: Option<String>,
        /// A setting the game offers, as KEY=VALUE; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// The player, for the broker's per-user quota and `arcade sessions --user`.
        #[arg(long = "user", value_name = "U")]
        user: Option<String>,
        /// End the session (`expired`) at this age, in seconds, unless the game's own limit is
        /// shorter.
        #[arg(long = "max-duration", value_name = "SECONDS")]
        max_duration: Option<u32>,
    },
    /// End a session; answers once the game's processes are gone.
    End {
        /// The session id, as printed by `arcade start` or `arcade sessions`.
        session: String,
    },
    /// List sessions, newest first.
    Sessions {
        /// Only sessions in this state.
        #[arg(long, value_name = "S")]
        status: Option<StatusArg>,
        /// Only sessions of this game.
        #[arg(long, value_name = "G")]
        game: Option<String>,
        /// Only sessions on this host.
        #[arg(long, value_name = "H")]
        host: Option<String>,
        /// Only sessions of this player.
        #[arg(long = "user", value_name = "U")]
        user: Option<String>,
        /// At most this many (the broker's default is 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIST_LIMIT)))]
        limit: Option<u32>,
        /// Continue a listing where the previous page ended (its next cursor).
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
    },
    /// Show one session in full.
    Session {
        /// The session id.
        session: String,
    },
    /// List the runtime hosts, their load and their games.
    Hosts,
    /// Stop placing new sessions on a host; its running sessions go on.
    Drain {
        /// The host id, as listed by `arcade hosts`.
        host: String,
    },
    /// Place new sessions on a drained host again.
    Resume {
        /// The host id.
        host: String,
    },
    /// List the games online hosts offer.
    Games,
    /// Follow the event stream: a line per event (JSON lines with --json), reconnecting
    /// after a break without missing or repeating one.
    Events {
        /// Only these types (`session.ended,host.offline`, ...).
        #[arg(long, value_name = "T,...", value_delimiter = ',')]
        types: Vec<String>,
        /// Only this session's.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Only this host's.
        #[arg(long, value_name = "H")]
        host: Option<String>,
        /// From the event after this id (default: from now on).
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// Exit after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// List the warm pools: their size, games ready and starting, claims, misses, failures.
    Pools,
    /// Create, change or remove a warm pool.
    Pool {
        /// What to do.
        #[command(subcommand)]
        action: PoolCommand,
    },
    /// Print a game's output (stdout and stderr), as its host's agent keeps it.
    Logs {
        /// The session id.
        session: String,
        /// The last this many lines.
        #[arg(long, value_name = "N", default_value_t = 200)]
        tail: u32,
        /// Keep printing what the game writes, until its session is over.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

/// `arcade pool ...`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum PoolCommand {
    /// Create or change a pool: keep SIZE games of GAME launched and ready for players.
    Set {
        /// The pool's name.
        pool: String,
        /// The game, as listed by `arcade games`.
        game: String,
        /// Games to keep ready.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_POOL_SIZE)))]
        size: u32,
        /// The games' mode (starts must ask for the same one to be served from the pool).
        #[arg(long, value_name = "M")]
        mode: Option<String>,
        /// The games' config file (likewise).
        #[arg(long, value_name = "C")]
        config: Option<String>,
        /// A setting of the games, as KEY=VALUE; repeatable (likewise).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Replace a ready game once it is this many seconds old (default: a day).
        #[arg(long, value_name = "SECS")]
        max_age: Option<u64>,
        /// Write only if the pool is still at this version (as `arcade pools` shows it).
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
    },
    /// Remove a pool and stop its ready games.
    Delete {
        /// The pool's name.
        pool: String,
        /// Remove only if the pool is still at this version.
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
    },
}

/// `--set KEY=VALUE`.
fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A session state, as given to `arcade sessions --status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Placed on a host, launching.
    Starting,
    /// A pool's game waiting for a player.
    Ready,
    /// The game is live.
    Running,
    /// Being stopped.
    Stopping,
    /// Over.
    Ended,
    /// Never ran.
    Failed,
    /// Its host went away.
    Lost,
}

impl From<StatusArg> for SessionStatus {
    fn from(arg: StatusArg) -> Self {
        match arg {
            StatusArg::Starting => Self::Starting,
            StatusArg::Ready => Self::Ready,
            StatusArg::Running => Self::Running,
            StatusArg::Stopping => Self::Stopping,
            StatusArg::Ended => Self::Ended,
            StatusArg::Failed => Self::Failed,
            StatusArg::Lost => Self::Lost,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The call to the broker failed, or the URL or key cannot be used.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An id given on the command line is not a valid id.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The `--ca-cert` file cannot be read.
    #[error("cannot read --ca-cert {}: {source}", path.display())]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer could not be written out.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// The answer could not be turned into JSON.
    #[error("cannot format the answer as JSON")]
    Json(#[source] serde_json::Error),
    /// `arcade events --types` names a type the broker does not send.
    #[error("unknown event type {0:?}; types: session.created, session.ready, session.running, session.stopping, session.ended, session.failed, session.lost, session.expiring, host.online, host.offline, host.draining, host.resumed")]
    UnknownEventType(String),
}

impl CliError {
    /// Whether the output's reader went away (`arcade sessions | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// One line saying what went wrong, such as
/// `arcade: unknown_game: no host offers game "foo"` or
/// `arcade: cannot reach the broker at http://127.0.0.1:8080 (is arcade-broker running?): Connection refused (os error 111)`.
pub fn error_line(err: &CliError) -> String {
    let mut line = format!("arcade: {err}");
    // The error's own text, then the innermost cause: the one that says what really happened.
    let mut cause = err.source();
    while let Some(next) = cause.and_then(|c| c.source()) {
        cause = Some(next);
    }
    if let Some(cause) = cause {
        let _ = write!(line, ": {cause}");
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs `cli`'s command against the broker and writes the answer to `out`.
pub async fn run(cli: Cli, out: &mut impl Write) -> Result<(), CliError> {
    let api_key = cli.api_key.filter(|key| !key.is_empty());
    let ca = match &cli.ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|source| CliError::CaCert {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let client = Client::with_ca(&cli.url, api_key, ca.as_deref())?;
    execute(&client, cli.command, cli.json, out).await
}

/// Runs one command and writes what it answers to `out`.
async fn execute(
    client: &Client,
    command: Command,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let text = match command {
        Command::Events {
            types,
            session,
            host,
            after,
            count,
        } => {
            let types = types
                .iter()
                .map(|t| EventType::parse(t).ok_or_else(|| CliError::UnknownEventType(t.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            let f = Follow {
                types,
                session: session.map(SessionId::new).transpose()?,
                host: host.map(HostId::new).transpose()?,
                after,
                count,
            };
            return follow(client, f, json, out).await;
        }
        Command::Logs {
            session,
            tail,
            follow,
        } => {
            let id = SessionId::new(session)?;
            return crate::tail::print(client, &id, tail, follow, out).await;
        }
        Command::Start {
            game,
            mode,
            config,
            settings,
            user,
            max_duration,
        } => {
            let request = StartSession {
                game_id: GameId::new(game)?,
                mode,
                config,
                settings: settings.into_iter().collect(),
                user_id: user,
                max_duration_s: max_duration,
            };
            let session = client.start_session(&request).await?;
            render(json, &session, started_text)
        }
        Command::End { session } => {
            let session = client.end_session(&SessionId::new(session)?).await?;
            render(json, &session, session_text)
        }
        Command::Sessions {
            status,
            game,
            host,
            user,
            limit,
            cursor,
        } => {
            let query = SessionQuery {
                status: status.map(SessionStatus::from),
                game_id: game.map(GameId::new).transpose()?,
                host_id: host.map(HostId::new).transpose()?,
                user_id: user,
                limit,
                cursor,
            };
            let list = client.list_sessions(&query).await?;
            render(json, &list, |l| {
                let mut table = sessions_table(&l.sessions);
                if let Some(next) = &l.next_cursor {
                    table.push_str(&format!("(more: --cursor {next})\n"));
                }
                table
            })
        }
        Command::Session { session } => {
            let session = client.get_session(&SessionId::new(session)?).await?;
            render(json, &session, session_text)
        }
        Command::Hosts => {
            let list = client.hosts().await?;
            let now = OffsetDateTime::now_utc();
            render(json, &list, |l| hosts_table(&l.hosts, now))
        }
        Command::Drain { host } => {
            let host = client.drain_host(&HostId::new(host)?).await?;
            render(json, &host, host_text)
        }
        Command::Resume { host } => {
            let host = client.resume_host(&HostId::new(host)?).await?;
            render(json, &host, host_text)
        }
        Command::Pools => {
            let list = client.pools().await?;
            render(json, &list, |l| pools_table(&l.pools))
        }
        Command::Pool {
            action:
                PoolCommand::Set {
                    pool,
                    game,
                    size,
                    mode,
                    config,
                    settings,
                    max_age,
                    if_version,
                },
        } => {
            let spec = PoolSpec {
                game_id: GameId::new(game)?,
                mode,
                config,
                settings: settings.into_iter().collect(),
                size,
                max_age_s: max_age,
            };
            let pool = client
                .put_pool(&PoolId::new(pool)?, &spec, if_version)
                .await?;
            render(json, &pool, |p| pools_table(std::slice::from_ref(p)))
        }
        Command::Pool {
            action: PoolCommand::Delete { pool, if_version },
        } => {
            let pool = client.delete_pool(&PoolId::new(pool)?, if_version).await?;
            render(json, &pool, |p| format!("pool {} removed\n", p.pool_id))
        }
        Command::Games => {
            let list = client.games().await?;
            render(json, &list, |l| games_table(&l.games))
        }
    }?;
    out.write_all(text.as_bytes()).map_err(CliError::Output)?;
    out.flush().map_err(CliError::Output)
}

/// `value` as pretty JSON with `--json`, else as `text` makes it.
fn render<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<String, CliError> {
    if json {
        let mut out = serde_json::to_string_pretty(value).map_err(CliError::Json)?;
        out.push('\n');
        Ok(out)
    } else {
        Ok(text(value))
    }
}

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A text table: columns separated by two spaces, each as wide as its widest cell.
#[derive(Debug, Clone)]
struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, every column left-aligned.
    fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns these columns (numbers).
    fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(a) = self.align.get_mut(c) {
                *a = Align::Right;
            }
        }
        self
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table, one line per row after the header line, each line ending in `\n`.
    fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = " ".repeat(widths[i].saturating_sub(width(cell)));
                match self.align[i] {
                    Align::Left => {
                        text.push_str(cell);
                        text.push_str(&pad);
                    }
                    Align::Right => {
                        text.push_str(&pad);
                        text.push_str(cell);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label  value` lines, the values lined up.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

const NONE: &str = "-";

/// `ip:port` (IPv6 in brackets), the IP alone, or `-`.
fn address(session: &Session) -> String {
    match (session.ip, session.port) {
        (Some(ip), Some(port)) => SocketAddr::new(ip, port).to_string(),
        (Some(ip), None) => ip.to_string(),
        _ => NONE.to_owned(),
    }
}

fn or_none<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| NONE.to_owned(), |v| v.to_string())
}

/// A time in UTC to the second: `2026-11-23 10:00:00Z`.
fn timestamp(t: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_else(|_| t.to_string())
}

/// How long before `now` `then` was: `4s ago`, `12m ago`, `3h ago`, `2d ago`.
fn age(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// What `arcade start` prints: where to connect.
fn started_text(s: &Session) -> String {
    fields(&[
        ("session", s.session_id.to_string()),
        ("status", s.status.to_string()),
        ("connect", address(s)),
        ("pid", or_none(s.pid)),
        ("game", format!("{} (mode {})", s.game_id, s.mode)),
        ("host", s.host_id.to_string()),
    ])
}

/// What `arcade session` and `arcade end` print: the whole session.
fn session_text(s: &Session) -> String {
    let mut pairs = vec![
        ("session", s.session_id.to_string()),
        ("status", s.status.to_string()),
        ("game", s.game_id.to_string()),
        ("mode", s.mode.clone()),
    ];
    if let Some(config) = &s.config {
        pairs.push(("config", config.clone()));
    }
    pairs.extend([
        ("host", s.host_id.to_string()),
        ("address", address(s)),
        ("pid", or_none(s.pid)),
        ("created", timestamp(s.created_at)),
        ("started", or_none(s.started_at.map(timestamp))),
    ]);
    if let Some(ended) = s.ended_at {
        pairs.push(("ended", timestamp(ended)));
    }
    if let Some(reason) = &s.end_reason {
        pairs.push(("end reason", serde_name(reason)));
    }
    if let Some(code) = s.exit_code {
        pairs.push(("exit code", code.to_string()));
    }
    fields(&pairs)
}

/// What `arcade sessions` prints.
fn sessions_table(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let mut table = Table::new(&[
        "SESSION", "GAME", "MODE", "STATUS", "HOST", "ADDRESS", "PID", "CREATED",
    ])
    .right(&[6]);
    for s in sessions {
        table.row(vec![
            s.session_id.to_string(),
            s.game_id.to_string(),
            s.mode.clone(),
            s.status.to_string(),
            s.host_id.to_string(),
            address(s),
            or_none(s.pid),
            timestamp(s.created_at),
        ]);
    }
    table.render()
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Bytes as GiB with one decimal.
fn gib(bytes: u64) -> String {
    // Precision loss above 2^53 bytes does not show at one decimal of a GiB.
    format!("{:.1}", bytes as f64 / GIB)
}

/// What `arcade hosts` prints; `now` for the LAST SEEN column.
fn hosts_table(hosts: &[Host], now: OffsetDateTime) -> String {
    if hosts.is_empty() {
        return "no hosts\n".to_owned();
    }
    let mut table = Table::new(&[
        "HOST",
        "IP",
        "STATUS",
        "SESSIONS",
        "CPU%",
        "MEM",
        "GAMES",
        "LAST SEEN",
    ])
    .right(&[3, 4, 5]);
    for h in hosts {
        let games: Vec<&str> = h.games.iter().map(GameId::as_str).collect();
        table.row(vec![
            h.host_id.to_string(),
            h.ip.to_string(),
            serde_name(&h.status),
            format!("{}/{}", h.sessions, h.max_sessions),
            format!("{:.1}", h.cpu_percent),
            format!("{}/{} GiB", gib(h.mem_used_bytes), gib(h.mem_total_bytes)),
            games.join(","),
            age(h.last_seen, now),
        ]);
    }
    table.render()
}

/// What `arcade drain` and `arcade resume` print.
fn host_text(h: &Host) -> String {
    match h.status {
        HostStatus::Draining => format!(
            "host {} is draining: it gets no new sessions; its {} running go on\n",
            h.host_id, h.sessions
        ),
        HostStatus::Online => format!("host {} is online and gets new sessions\n", h.host_id),
        HostStatus::Offline => format!("host {} is offline\n", h.host_id),
    }
}

/// What `arcade games` prints.
fn games_table(games: &[Game]) -> String {
    if games.is_empty() {
        return "no games (no online host offers any)\n".to_owned();
    }
    let mut table = Table::new(&["GAME", "MODES", "HOSTS"]).right(&[2]);
    for g in games {
        table.row(vec![
            g.game_id.to_string(),
            g.modes.join(","),
            g.hosts.to_string(),
        ]);
    }
    table.render()
}

/// Pools as a table.
fn pools_table(pools: &[Pool]) -> String {
    if pools.is_empty() {
        return "no pools\n".to_owned();
    }
    let mut table = Table::new(&[
        "POOL",
        "GAME",
        "MODE",
        "SIZE",
        "READY",
        "STARTING",
        "CLAIMS",
        "MISSES",
        "FAILURES",
        "VERSION",
        "LAST ERROR",
    ])
    .right(&[3, 4, 5, 6, 7, 8, 9]);
    for p in pools {
        table.row(vec![
            p.pool_id.to_string(),
            p.game_id.to_string(),
            p.mode.clone().unwrap_or_else(|| "-".into()),
            p.size.to_string(),
            p.ready.to_string(),
            p.starting.to_string(),
            p.claims.to_string(),
            p.misses.to_string(),
            p.failures.to_string(),
            p.version.to_string(),
            p.last_error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::{refused_url, serve_once};
    use clap::CommandFactory;
    use protocol::api::EndReason;
    use time::macros::datetime;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("arcade").chain(args.iter().copied())).unwrap()
    }

    fn session() -> Session {
        Session {
            session_id: SessionId::new("0190c3c8-7d2e").unwrap(),
            game_id: GameId::new("sleeper").unwrap(),
            mode: "default".into(),
            config: None,
            status: SessionStatus::Running,
            host_id: HostId::new("host-a").unwrap(),
            ip: Some("127.0.0.1".parse().unwrap()),
            port: Some(20000),
            pid: Some(4242),
            created_at: datetime!(2026-11-23 10:00:00 UTC),
            started_at: Some(datetime!(2026-11-23 10:00:01 UTC)),
            ended_at: None,
            end_reason: None,
            exit_code: None,
            pool_id: None,
            ports: vec![20000],
            settings: Default::default(),
            user_id: None,
            max_duration_s: None,
            expires_at: None,
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_may_follow_the_command() {
        let cli = parse(&[
            "sessions",
            "--json",
            "--url",
            "http://h:1",
            "--status",
            "running",
        ]);
        assert!(cli.json);
        assert_eq!(cli.url, "http://h:1");
        assert_eq!(
            cli.command,
            Command::Sessions {
                status: Some(StatusArg::Running),
                game: None,
                host: None,
                user: None,
                limit: None,
                cursor: None
            }
        );
        let cli = parse(&["--api-key", "k", "start", "neverball", "--mode", "periodic"]);
        assert_eq!(cli.api_key.as_deref(), Some("k"));
        assert_eq!(
            cli.command,
            Command::Start {
                game: "neverball".into(),
                mode: Some("periodic".into()),
                config: None,
                settings: vec![],
                user: None,
                max_duration: None,
            }
        );
        let cli = parse(&[
            "start",
            "ga",
            "--set",
            "video-fps=30",
            "--set",
            "video-specific[b]=8000000",
            "--user",
            "player-1",
            "--max-duration",
            "7200",
        ]);
        assert!(matches!(
            cli.command,
            Command::Start { settings, user: Some(u), max_duration: Some(7200), .. }
                if u == "player-1"
                    && settings == [
                        ("video-fps".to_owned(), "30".to_owned()),
                        ("video-specific[b]".to_owned(), "8000000".to_owned())
                    ]
        ));
        assert!(Cli::try_parse_from(["arcade", "start", "g", "--set", "novalue"]).is_err());
        let cli = parse(&["start", "g", "--config", "c.conf", "--api-key", "k2"]);
        assert_eq!(cli.api_key.as_deref(), Some("k2"));
        assert!(matches!(cli.command, Command::Start { config: Some(c), .. } if c == "c.conf"));
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            parse(&["end", "s1"]).command,
            Command::End {
                session: "s1".into()
            }
        );
        assert_eq!(
            parse(&["session", "s1"]).command,
            Command::Session {
                session: "s1".into()
            }
        );
        assert_eq!(parse(&["hosts"]).command, Command::Hosts);
        assert_eq!(
            parse(&["drain", "h"]).command,
            Command::Drain { host: "h".into() }
        );
        assert_eq!(
            parse(&["resume", "h"]).command,
            Command::Resume { host: "h".into() }
        );
        assert_eq!(parse(&["games"]).command, Command::Games);
        assert_eq!(
            parse(&["sessions", "--game", "g", "--host", "h", "--limit", "7"]).command,
            Command::Sessions {
                status: None,
                game: Some("g".into()),
                host: Some("h".into()),
                user: None,
                limit: Some(7),
                cursor: None
            }
        );
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        for bad in [
            &["arcade"][..],
            &["arcade", "start"],
            &["arcade", "sessions", "--status", "runing"],
            &["arcade", "sessions", "--limit", "0"],
            &["arcade", "sessions", "--limit", "1001"],
            &["arcade", "bogus"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    /// The only test that reads or changes the environment, so tests running in parallel do
    /// not see each other's variables.
    #[test]
    fn env_gives_the_defaults_and_flags_win() {
        std::env::remove_var("ARCADE_URL");
        std::env::remove_var("ARCADE_API_KEY");
        let cli = parse(&["hosts"]);
        assert_eq!(cli.url, DEFAULT_URL);
        assert_eq!(cli.api_key, None);
        assert!(!cli.json);

        std::env::set_var("ARCADE_URL", "http://broker:9000");
        std::env::set_var("ARCADE_API_KEY", "very-secret");
        let cli = parse(&["hosts"]);
        assert_eq!(cli.url, "http://broker:9000");
        assert_eq!(cli.api_key.as_deref(), Some("very-secret"));
        let cli = parse(&["hosts", "--url", "http://other:1", "--api-key", "k"]);
        assert_eq!(cli.url, "http://other:1");
        assert_eq!(cli.api_key.as_deref(), Some("k"));
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains("very-secret"), "{help}");
        assert!(help.contains("http://broker:9000"), "{help}");

        std::env::remove_var("ARCADE_URL");
        std::env::remove_var("ARCADE_API_KEY");
    }

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["NAME", "N", "NOTE"]).right(&[1]);
        table.row(vec!["a".into(), "1".into(), "first".into()]);
        table.row(vec!["longer-name".into(), "1234".into(), String::new()]);
        table.row(vec!["é".into()]);
        assert_eq!(
            table.render(),
            "NAME            N  NOTE\n\
             a               1  first\n\
             longer-name  1234\n\
             é\n"
        );
    }

    #[test]
    fn fields_align_values() {
        assert_eq!(
            fields(&[("session", "s1".into()), ("pid", "42".into())]),
            "session  s1\npid      42\n"
        );
    }

    #[test]
    fn sessions_table_shows_address_and_times() {
        let mut ended = session();
        ended.session_id = SessionId::new("s2").unwrap();
        ended.status = SessionStatus::Failed;
        ended.ip = None;
        ended.port = None;
        ended.pid = None;
        let text = sessions_table(&[session(), ended]);
        assert_eq!(
            text,
            "SESSION        GAME     MODE     STATUS   HOST    ADDRESS           PID  CREATED\n\
             0190c3c8-7d2e  sleeper  default  running  host-a  127.0.0.1:20000  4242  2026-11-23 10:00:00Z\n\
             s2             sleeper  default  failed   host-a  -                   -  2026-11-23 10:00:00Z\n"
        );
        assert_eq!(sessions_table(&[]), "no sessions\n");
    }

    #[test]
    fn hosts_table_shows_load() {
        let host = Host {
            host_id: HostId::new("host-a").unwrap(),
            ip: "10.0.0.5".parse().unwrap(),
            status: HostStatus::Draining,
            max_sessions: 8,
            sessions: 2,
            cpu_percent: 12.34,
            mem_used_bytes: 3 * 1024 * 1024 * 1024 / 2,
            mem_total_bytes: 16 * 1024 * 1024 * 1024,
            games: vec![
                GameId::new("sleeper").unwrap(),
                GameId::new("neverball").unwrap(),
            ],
            last_seen: datetime!(2026-11-23 10:00:00 UTC),
            broker_id: Some("b1".into()),
        };
        let text = hosts_table(&[host], datetime!(2026-11-23 10:00:03 UTC));
        assert_eq!(
            text,
            "HOST    IP        STATUS    SESSIONS  CPU%           MEM  GAMES              LAST SEEN\n\
             host-a  10.0.0.5  draining       2/8  12.3  1.5/16.0 GiB  sleeper,neverball  3s ago\n"
        );
    }

    #[test]
    fn pools_table_shows_counts_and_the_last_error() {
        let pool = Pool {
            pool_id: PoolId::new("lobby").unwrap(),
            game_id: GameId::new("neverball").unwrap(),
            mode: None,
            config: None,
            settings: Default::default(),
            size: 5,
            max_age_s: 86_400,
            ready: 4,
            starting: 1,
            claims: 12,
            misses: 2,
            failures: 1,
            last_error: Some("no capacity".into()),
            version: 3,
        };
        let text = pools_table(&[pool]);
        assert_eq!(
            text,
            "POOL   GAME       MODE  SIZE  READY  STARTING  CLAIMS  MISSES  FAILURES  VERSION  LAST ERROR\n\
             lobby  neverball  -        5      4         1      12       2         1        3  no capacity\n"
        );
        assert_eq!(pools_table(&[]), "no pools\n");
        let set = parse(&[
            "pool",
            "set",
            "lobby",
            "neverball",
            "--size",
            "5",
            "--if-version",
            "3",
        ]);
        assert!(matches!(
            set.command,
            Command::Pool {
                action: PoolCommand::Set {
                    size: 5,
                    if_version: Some(3),
                    ..
                }
            }
        ));
        assert!(
            Cli::try_parse_from(["arcade", "pool", "set", "p", "g", "--size", "1001"]).is_err()
        );
    }

    #[test]
    fn games_table_lists_modes() {
        let games = [Game {
            game_id: GameId::new("neverball").unwrap(),
            modes: vec!["event-driven".into(), "periodic".into()],
            hosts: 2,
            settings: vec![],
        }];
        assert_eq!(
            games_table(&games),
            "GAME       MODES                  HOSTS\n\
             neverball  event-driven,periodic      2\n"
        );
    }

    #[test]
    fn session_block_shows_what_is_known() {
        let mut s = session();
        s.status = SessionStatus::Ended;
        s.ended_at = Some(datetime!(2026-11-23 10:05:00 UTC));
        s.end_reason = Some(EndReason::GameExited);
        s.exit_code = Some(3);
        let text = session_text(&s);
        assert!(text.contains("status      ended\n"), "{text}");
        assert!(text.contains("address     127.0.0.1:20000\n"), "{text}");
        assert!(text.contains("end reason  game_exited\n"), "{text}");
        assert!(text.contains("exit code   3\n"), "{text}");
        assert!(!text.contains("config"), "{text}");
        let short = started_text(&session());
        assert!(short.starts_with("session  0190c3c8-7d2e\nstatus   running\nconnect  127.0.0.1:20000\npid      4242\n"), "{short}");
    }

    #[test]
    fn ages_are_short() {
        let t = datetime!(2026-11-23 10:00:00 UTC);
        assert_eq!(age(t, t), "0s ago");
        assert_eq!(age(t, datetime!(2026-11-23 09:00:00 UTC)), "0s ago");
        assert_eq!(age(t, datetime!(2026-11-23 10:02:30 UTC)), "2m ago");
        assert_eq!(age(t, datetime!(2026-11-23 13:00:00 UTC)), "3h ago");
        assert_eq!(age(t, datetime!(2026-11-25 10:00:00 UTC)), "2d ago");
    }

    async fn run_args(args: &[&str]) -> (Result<(), CliError>, String) {
        let mut out = Vec::new();
        let result = run(parse(args), &mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn invalid_ids_fail_in_one_line_before_any_call() {
        let (result, out) = run_args(&["--url", "http://127.0.0.1:1", "end", "../x"]).await;
        let err = result.unwrap_err();
        assert!(out.is_empty());
        assert_eq!(
            error_line(&err),
            "arcade: session id \"../x\" may only hold letters, digits, '-', '_' and '.', and must not start with '.'"
        );
    }

    #[tokio::test]
    async fn api_errors_give_code_and_message() {
        let body = r#"{"error":{"code":"unknown_game","message":"no host offers game \"foo\""}}"#;
        let (url, _req) = serve_once("404 Not Found", &[], body).await;
        let (result, _) = run_args(&["--url", &url, "start", "foo"]).await;
        assert_eq!(
            error_line(&result.unwrap_err()),
            "arcade: unknown_game: no host offers game \"foo\""
        );
    }

    #[tokio::test]
    async fn unreachable_broker_gives_one_line_with_cause() {
        let url = refused_url().await;
        let (result, _) = run_args(&["--url", &url, "hosts"]).await;
        let line = error_line(&result.unwrap_err());
        let prefix =
            format!("arcade: cannot reach the broker at {url} (is arcade-broker running?): ");
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.len() > prefix.len(), "{line}");
        assert!(!line.contains('\n'));
    }

    #[tokio::test]
    async fn json_output_is_the_apis_json() {
        let body = r#"{"games":[{"game_id":"sleeper","modes":["default"],"hosts":1}]}"#;
        let (url, _req) = serve_once("200 OK", &[], body).await;
        let (result, out) = run_args(&["games", "--url", &url, "--json"]).await;
        result.unwrap();
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        let expected: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value, expected);
        assert!(out.ends_with("}\n"));
    }

    #[tokio::test]
    async fn text_output_is_a_table() {
        let body = r#"{"games":[{"game_id":"sleeper","modes":["default"],"hosts":1}]}"#;
        let (url, _req) = serve_once("200 OK", &[], body).await;
        let (result, out) = run_args(&["games", "--url", &url]).await;
        result.unwrap();
        assert_eq!(out, "GAME     MODES    HOSTS\nsleeper  default      1\n");
    }
}
