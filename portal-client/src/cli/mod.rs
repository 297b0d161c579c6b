//! The `arcade` command line: `arcade [--url URL] [--api-key KEY] [--json] COMMAND`.
//!
//! [`Cli`] is the clap parser; [`run`] runs one command against the broker and writes what it
//! answered to any [`Write`]: aligned text tables for people, or with `--json` the API's JSON
//! (pretty-printed) for scripts. A failure is a [`CliError`], which [`error_line`] turns into
//! the one line `arcade` prints on stderr before exiting with status 1.
//!
//! - this file: the command line ([`Cli`], [`Command`]) and the dispatch of a command: its ids
//!   checked and its request built, then handed to its group;
//! - [`sessions`]: `start`, `sessions`, `session` and `end` (`events` and `logs`, which
//!   stream, are [`crate::follow`] and [`crate::tail`]);
//! - [`hosts`]: `hosts`, `drain` and `resume`; [`pools`]: `pools`, `pool set` and
//!   `pool delete`; [`games`]: `games`;
//! - [`token`]: `token`, a player token minted from an `hs256:` key;
//! - [`builds`]: `build push` and `builds`;
//! - [`output`]: JSON or text, and the text's tables, fields and times, which the groups use;
//! - [`error`]: why a command failed, in one line.

mod builds;
pub(crate) mod error;
mod games;
mod hosts;
mod output;
mod pools;
mod sessions;
mod token;
mod usage;

pub use error::{error_line, CliError};

use std::io::Write;

use clap::{Parser, Subcommand, ValueEnum};
use protocol::api::{
    EventType, PoolSpec, SessionQuery, SessionStatus, StartSession, MAX_LIST_LIMIT, MAX_POOL_SIZE,
};
use protocol::{BuildId, GameId, HostId, PoolId, SessionId};

use crate::client::Client;
use crate::follow::{follow, Follow};

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
        /// Run only on a host with this label, as KEY=VALUE; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Rather on a host with this label, as KEY=VALUE; repeatable.
        #[arg(long = "prefer", value_name = "KEY=VALUE", value_parser = parse_label)]
        prefer: Vec<(String, String)>,
    },
    /// Mint a player token (HS256) for a user, as a portal's server would: for tests and
    /// scripts. Prints the token; calls nothing.
    Token {
        /// The player's user id (the token's `sub`).
        #[arg(long = "user", value_name = "U")]
        user: String,
        /// Seconds the token is valid for (at most 86400).
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        ttl: u64,
        /// The broker's player key, `hs256:SECRET` (as its `--player-key`).
        #[arg(
            long,
            env = "ARCADE_PLAYER_KEY",
            hide_env_values = true,
            value_name = "hs256:SECRET"
        )]
        key: String,
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
    /// List the runtime hosts, their load, labels and games.
    Hosts {
        /// Only hosts with this label, as KEY=VALUE; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Sessions and the time they ran within a window, by user, game or host.
    Usage {
        /// The window's start, RFC 3339 (default: 30 days before --to).
        #[arg(long, value_name = "T")]
        from: Option<String>,
        /// The window's end, RFC 3339 (default: now).
        #[arg(long, value_name = "T")]
        to: Option<String>,
        /// What to sum by.
        #[arg(long, value_enum, default_value = "user")]
        by: UsageByArg,
        /// Only this user's sessions.
        #[arg(long = "user", value_name = "U")]
        user: Option<String>,
        /// Only this game's sessions.
        #[arg(long = "game", value_name = "G")]
        game: Option<String>,
        /// Print the broker's CSV.
        #[arg(long)]
        csv: bool,
    },
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
    /// Upload a build (`build push FILE`): a `.tar.gz` of a game's directory or one
    /// executable, named by its sha256 (printed first).
    Build {
        /// What to do.
        #[command(subcommand)]
        action: BuildCommand,
    },
    /// List the builds, newest first.
    Builds,
    /// Set, roll back or remove a central game.
    Game {
        /// What to do.
        #[command(subcommand)]
        action: GameCommand,
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

/// `arcade build ...`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum BuildCommand {
    /// Upload FILE; prints its sha256, then whether it was stored.
    Push {
        /// The build: a `.tar.gz` or one executable.
        file: std::path::PathBuf,
    },
}

/// `arcade game ...`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum GameCommand {
    /// Set a central game to a build (`arcade build push` prints it): with its catalog entry
    /// from a TOML file (the keys of one entry of a host's catalog), or keeping the game's
    /// entry. A changed build rolls out through canary hosts.
    Set {
        /// The game's id.
        game: String,
        /// The build's sha256.
        #[arg(long, value_name = "SHA256")]
        build: String,
        /// The catalog entry: a TOML file of one entry's keys (`command`, `args`, ...).
        #[arg(long, value_name = "ENTRY.toml")]
        from_file: Option<std::path::PathBuf>,
        /// Hosts that run a changed build first.
        #[arg(long, value_name = "N")]
        canary_hosts: Option<u32>,
        /// Seconds the canaries run it before every host switches.
        #[arg(long, value_name = "SECS")]
        hold: Option<u32>,
        /// Failed launches of it that halt the rollout.
        #[arg(long, value_name = "N")]
        max_failures: Option<u32>,
        /// Write only if the game is still at this version.
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
    },
    /// Return a central game to its previous build at once, on every host.
    Rollback {
        /// The game's id.
        game: String,
    },
    /// Remove a central game: no new sessions; running ones go on.
    Delete {
        /// The game's id.
        game: String,
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

/// What `arcade usage` sums by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageByArg {
    /// The session's user.
    User,
    /// The game.
    Game,
    /// The host.
    Host,
}

impl From<UsageByArg> for protocol::api::UsageBy {
    fn from(b: UsageByArg) -> Self {
        match b {
            UsageByArg::User => Self::User,
            UsageByArg::Game => Self::Game,
            UsageByArg::Host => Self::Host,
        }
    }
}

/// A label, `KEY=VALUE`, as hosts carry them.
fn parse_label(s: &str) -> Result<(String, String), protocol::labels::LabelError> {
    protocol::labels::parse(s)
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

/// Runs one command and writes what it answers to `out`. The command line's ids are checked
/// and its request is built here; the command's group calls the broker and words the answer.
async fn execute(
    client: &Client,
    command: Command,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let text = match command {
        Command::Token { user, ttl, key } => token::mint(&user, ttl, &key).map(|t| t + "\n"),
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
            labels,
            prefer,
        } => {
            // Every field spelled out: each is a flag of `arcade start`.
            let request = StartSession {
                game_id: GameId::new(game)?,
                mode,
                config,
                settings: settings.into_iter().collect(),
                user_id: user,
                max_duration_s: max_duration,
                labels: labels.into_iter().collect(),
                prefer: prefer.into_iter().collect(),
            };
            sessions::start(client, &request, json).await
        }
        Command::End { session } => sessions::end(client, &SessionId::new(session)?, json).await,
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
            sessions::list(client, &query, json).await
        }
        Command::Session { session } => {
            sessions::show(client, &SessionId::new(session)?, json).await
        }
        Command::Hosts { labels } => hosts::list(client, &labels.into_iter().collect(), json).await,
        Command::Usage {
            from,
            to,
            by,
            user,
            game,
            csv,
        } => {
            let query = protocol::api::UsageQuery {
                from,
                to,
                by: Some(by.into()),
                user_id: user,
                game_id: game.map(GameId::new).transpose()?,
            };
            usage::show(client, &query, csv, json).await
        }
        Command::Drain { host } => hosts::drain(client, &HostId::new(host)?, json).await,
        Command::Resume { host } => hosts::resume(client, &HostId::new(host)?, json).await,
        Command::Pools => pools::list(client, json).await,
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
            pools::set(client, &PoolId::new(pool)?, &spec, if_version, json).await
        }
        Command::Pool {
            action: PoolCommand::Delete { pool, if_version },
        } => pools::delete(client, &PoolId::new(pool)?, if_version, json).await,
        Command::Games => games::list(client, json).await,
        Command::Build {
            action: BuildCommand::Push { file },
        } => builds::push(client, &file, json).await,
        Command::Builds => builds::list(client, json).await,
        Command::Game {
            action:
                GameCommand::Set {
                    game,
                    build,
                    from_file,
                    canary_hosts,
                    hold,
                    max_failures,
                    if_version,
                },
        } => {
            let set = games::Set {
                build: BuildId::new(build)?,
                entry: from_file,
                rollout: games::RolloutArgs {
                    canary_hosts,
                    hold_s: hold,
                    max_failures,
                },
                if_version,
            };
            games::set(client, &GameId::new(game)?, set, json).await
        }
        Command::Game {
            action: GameCommand::Rollback { game },
        } => games::rollback(client, &GameId::new(game)?, json).await,
        Command::Game {
            action: GameCommand::Delete { game },
        } => games::delete(client, &GameId::new(game)?, json).await,
    }?;
    out.write_all(text.as_bytes()).map_err(CliError::Output)?;
    out.flush().map_err(CliError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::{refused_url, serve_once};
    use clap::CommandFactory;

    pub(super) fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("arcade").chain(args.iter().copied())).unwrap()
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
                labels: vec![],
                prefer: vec![],
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
        assert_eq!(parse(&["hosts"]).command, Command::Hosts { labels: vec![] });
        assert_eq!(
            parse(&["usage", "--by", "game", "--csv"]).command,
            Command::Usage {
                from: None,
                to: None,
                by: UsageByArg::Game,
                user: None,
                game: None,
                csv: true
            }
        );
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
        let body = r#"{"games":[{"game_id":"sleeper","modes":["default"],"hosts":1,"build":null,"source":"host","rollout":null}]}"#;
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
        assert_eq!(
            out,
            "GAME     MODES    HOSTS  SOURCE  ROLLOUT\nsleeper  default      1  host    -\n"
        );
    }
}
