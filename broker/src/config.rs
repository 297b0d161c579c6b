//! The `arcade-broker` command line and its resolution into a [`Config`].
//!
//! Every flag may also come from an environment variable or from a TOML file given with
//! `--config`; flags win over the environment (clap handles both), and both over the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::auth::ApiKey;
use crate::players::KeySpec;

/// `arcade-broker`: the Arcade game-streaming broker.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "arcade-broker", version, about)]
pub struct Args {
    /// A TOML file with any of these settings: keys as the flags with `_` for `-`, and the
    /// plural for the repeatable ones (`api_keys`, `cors_origins`); paths relative to the
    /// working directory.
    #[arg(long, env = "ARCADE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP API address [default: 127.0.0.1:8080].
    #[arg(long, env = "ARCADE_HTTP")]
    pub http: Option<SocketAddr>,
    /// Where agents connect [default: 127.0.0.1:7070].
    #[arg(long, env = "ARCADE_AGENT_LISTEN")]
    pub agent_listen: Option<SocketAddr>,
    /// mysql://user:pass@host:port/db (MySQL or MariaDB); by default an in-memory store.
    #[arg(long, env = "ARCADE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Agents must present this token; required when --agent-listen is not loopback.
    #[arg(long, env = "ARCADE_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Serve the HTTP API over HTTPS with this certificate chain (PEM).
    #[arg(long, env = "ARCADE_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// The HTTPS certificate's private key (PEM).
    #[arg(long, env = "ARCADE_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// Serve the agent link over TLS with this certificate chain (PEM).
    #[arg(long, env = "ARCADE_AGENT_TLS_CERT")]
    pub agent_tls_cert: Option<PathBuf>,
    /// The agent link certificate's private key (PEM).
    #[arg(long, env = "ARCADE_AGENT_TLS_KEY")]
    pub agent_tls_key: Option<PathBuf>,
    /// Require agents to present a client certificate signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "ARCADE_AGENT_CLIENT_CA")]
    pub agent_client_ca: Option<PathBuf>,
    /// ROLE:KEY, repeatable; ROLE is portal, provider or admin.
    #[arg(
        long = "api-key",
        env = "ARCADE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// A key that verifies player tokens, repeatable: a file holding an Ed25519 or RSA public
    /// key (PEM) or a JWKS, or `hs256:SECRET` (API.md, "Players").
    #[arg(
        long = "player-key",
        env = "ARCADE_PLAYER_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub player_keys: Vec<String>,
    /// The broker's URL as games and players reach it (behind a load balancer: the
    /// balancer's); games get `ARCADE_JOIN_URL` from it [default: http:// and the --http
    /// address].
    #[arg(long, env = "ARCADE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a session's join token may be redeemed [default: 120].
    #[arg(long, env = "ARCADE_JOIN_TOKEN_TTL")]
    pub join_token_ttl: Option<f64>,
    /// Where uploaded builds are kept [default: the broker's data directory's `builds`:
    /// $XDG_DATA_HOME/arcade-broker, or ~/.local/share/arcade-broker].
    #[arg(long, env = "ARCADE_BUILD_STORE")]
    pub build_store: Option<PathBuf>,
    /// Larger uploads of builds answer 413 [default: 8 GiB].
    #[arg(long, env = "ARCADE_MAX_BUILD_SIZE")]
    pub max_build_size: Option<u64>,
    /// Also run a local agent with a built-in catalog of demo games.
    #[arg(long, env = "ARCADE_DEV")]
    pub dev: bool,
    /// Seconds a start waits for the agent before failing with 504 [default: 10].
    #[arg(long, env = "ARCADE_LAUNCH_TIMEOUT")]
    pub launch_timeout: Option<f64>,
    /// Seconds of silence after which an agent is offline and its sessions lost [default: 5].
    #[arg(long, env = "ARCADE_HEARTBEAT_TIMEOUT")]
    pub heartbeat_timeout: Option<f64>,
    /// Browser origin allowed to call the API; repeatable; `*` for any.
    #[arg(
        long = "cors-origin",
        env = "ARCADE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// HTTP worker threads [default: the number of CPUs, at most 4].
    #[arg(long, env = "ARCADE_WORKERS")]
    pub workers: Option<usize>,
    /// NATS server(s) that replicas use to reach each other; repeatable or comma-separated for
    /// a cluster; requires --database-url.
    #[arg(
        long = "nats-url",
        env = "ARCADE_NATS_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub nats_urls: Vec<String>,
    /// This broker's name among replicas, unique [default: the hostname and the agent port].
    #[arg(long, env = "ARCADE_BROKER_ID")]
    pub broker_id: Option<String>,
    /// Logs for people (`text`) or JSON lines for log shippers (`json`) [default: text].
    #[arg(long, env = "ARCADE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// POST every event (of --webhook-types) to this URL, signed; repeatable.
    #[arg(long = "webhook", env = "ARCADE_WEBHOOKS", value_delimiter = ',')]
    pub webhooks: Vec<String>,
    /// The webhooks' signing secret: `whsec_<base64>` or raw; required with --webhook.
    #[arg(long, env = "ARCADE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Which event types the webhooks receive [default: every session.* type].
    #[arg(long, env = "ARCADE_WEBHOOK_TYPES", value_delimiter = ',')]
    pub webhook_types: Vec<String>,
    /// Sessions one `user_id` may hold at once; a start beyond is 429 [default: no limit].
    #[arg(long, env = "ARCADE_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<u32>,
    /// Seconds a host may have no session before a `host.idle` event says so [default: 600].
    #[arg(long, env = "ARCADE_HOST_IDLE_AFTER")]
    pub host_idle_after: Option<f64>,
    /// `spread`: new sessions go to the least loaded host; `pack`: to the fullest that fits,
    /// so idle hosts can be powered down [default: spread].
    #[arg(long, env = "ARCADE_PLACEMENT", value_enum)]
    pub placement: Option<Placement>,
}

pub use daemon::LogFormat;

/// `--placement`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The least loaded host.
    #[default]
    Spread,
    /// The fullest host that fits.
    Pack,
}

impl From<Placement> for crate::placement::Strategy {
    fn from(p: Placement) -> Self {
        match p {
            Placement::Spread => Self::Spread,
            Placement::Pack => Self::Pack,
        }
    }
}

/// `--host-idle-after`'s default.
pub const DEFAULT_HOST_IDLE_AFTER: Duration = Duration::from_secs(600);

/// The `--config` file: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<SocketAddr>,
    agent_listen: Option<SocketAddr>,
    database_url: Option<String>,
    agent_token: Option<String>,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    player_keys: Vec<String>,
    public_url: Option<String>,
    join_token_ttl: Option<f64>,
    build_store: Option<PathBuf>,
    max_build_size: Option<u64>,
    dev: Option<bool>,
    launch_timeout: Option<f64>,
    heartbeat_timeout: Option<f64>,
    #[serde(default)]
    cors_origins: Vec<String>,
    workers: Option<usize>,
    http_tls_cert: Option<PathBuf>,
    http_tls_key: Option<PathBuf>,
    agent_tls_cert: Option<PathBuf>,
    agent_tls_key: Option<PathBuf>,
    agent_client_ca: Option<PathBuf>,
    log_format: Option<LogFormat>,
    broker_id: Option<String>,
    #[serde(default)]
    nats_urls: Vec<String>,
    max_sessions_per_user: Option<u32>,
    #[serde(default)]
    webhooks: Vec<String>,
    webhook_secret: Option<String>,
    #[serde(default)]
    webhook_types: Vec<String>,
    host_idle_after: Option<f64>,
    placement: Option<Placement>,
}

/// Files of the agent link's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA of agents' client certificates (PEM), for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// The broker's resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP API address.
    pub http: SocketAddr,
    /// Agent listener address.
    pub agent_listen: SocketAddr,
    /// Agents must present this token.
    pub agent_token: Option<String>,
    /// MySQL or MariaDB; `None` for the in-memory store.
    pub database_url: Option<String>,
    /// Run a local agent with demo games.
    #[cfg(feature = "dev")]
    pub dev: Option<crate::dev::DevConfig>,
    /// A start waits this long for the agent.
    pub launch_timeout: Duration,
    /// An agent silent this long is offline.
    pub heartbeat_timeout: Duration,
    /// Browser origins allowed.
    pub cors_origins: Vec<String>,
    /// API keys; none: the API is open (loopback only).
    pub api_keys: Vec<ApiKey>,
    /// The keys that verify player tokens; none: no player token is accepted.
    pub player_keys: Vec<KeySpec>,
    /// The broker's URL as games reach it; `None`: `http://` and the bound `--http` address.
    pub public_url: Option<String>,
    /// How long a join token may be redeemed.
    pub join_token_ttl: Duration,
    /// Where uploaded builds are kept.
    pub build_store: PathBuf,
    /// The largest build taken.
    pub max_build_size: u64,
    /// Agent link TLS: certificate chain, key, and the client CA for mutual TLS.
    pub agent_tls: Option<AgentTls>,
    /// HTTPS for the API: certificate chain and key (PEM).
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// HTTP worker threads.
    pub workers: usize,
    /// How logs are written.
    pub log_format: LogFormat,
    /// This broker's name; `None`: the hostname and the agent port, as bound.
    pub broker_id: Option<String>,
    /// NATS servers of the replica set; empty: a single broker.
    pub nats_urls: Vec<String>,
    /// Where events are POSTed, and how; `None`: nowhere.
    pub webhooks: Option<crate::events::webhooks::WebhookConfig>,
    /// Sessions one user may hold at once; `None`: no limit.
    pub max_sessions_per_user: Option<u32>,
    /// At shutdown, how long HTTP requests in flight may hold HTTP's workers (whole seconds;
    /// 30). Starts and ends outlive it: they are the service's own tasks, drained after HTTP.
    /// Not a flag; tests shorten it.
    pub shutdown_grace: Duration,
    /// A host without a session this long gets `host.idle`.
    pub host_idle_after: Duration,
    /// How placement chooses among the hosts that fit.
    pub placement: crate::placement::Strategy,
}

/// Why the settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file cannot be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is wrong or unsafe.
    #[error("{0}")]
    Invalid(String),
    /// The webhook settings are wrong.
    #[error(transparent)]
    Webhook(#[from] crate::events::webhooks::WebhookConfigError),
}

/// `--max-build-size`'s default: 8 GiB.
pub const DEFAULT_MAX_BUILD_SIZE: u64 = 8 << 30;

/// The broker's data directory: `$XDG_DATA_HOME/arcade-broker`, else
/// `~/.local/share/arcade-broker`, else one under the temporary directory.
fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("arcade-broker");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/arcade-broker");
    }
    std::env::temp_dir().join("arcade-broker")
}

fn seconds(name: &str, v: f64) -> Result<Duration, ConfigError> {
    if !(0.05..=3600.0).contains(&v) {
        return Err(ConfigError::Invalid(format!(
            "--{name} must be 0.05 to 3600 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A certificate and its key, both or neither (flags and file merged).
fn pair(
    a_name: &str,
    a: Option<PathBuf>,
    b_name: &str,
    b: Option<PathBuf>,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Invalid(format!("--{a_name} needs --{b_name}"))),
        (None, Some(_)) => Err(ConfigError::Invalid(format!("--{b_name} needs --{a_name}"))),
    }
}

impl Config {
    /// Defaults for everything: loopback addresses, no auth, no dev agent.
    pub fn loopback() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            agent_token: None,
            database_url: None,
            #[cfg(feature = "dev")]
            dev: None,
            launch_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(5),
            cors_origins: Vec::new(),
            api_keys: Vec::new(),
            player_keys: Vec::new(),
            public_url: None,
            join_token_ttl: Duration::from_secs(120),
            build_store: default_data_dir().join("builds"),
            max_build_size: DEFAULT_MAX_BUILD_SIZE,
            agent_tls: None,
            http_tls: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            log_format: LogFormat::Text,
            broker_id: None,
            shutdown_grace: Duration::from_secs(30),
            nats_urls: Vec::new(),
            webhooks: None,
            max_sessions_per_user: None,
            host_idle_after: DEFAULT_HOST_IDLE_AFTER,
            placement: crate::placement::Strategy::Spread,
        }
    }

    /// Checks rules that keep an exposed broker safe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mutual_tls = self
            .agent_tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        if self.agent_token.is_none() && !mutual_tls && !self.agent_listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--agent-listen {} is not a loopback address, so agents must authenticate: set --agent-token (or ARCADE_AGENT_TOKEN)",
                self.agent_listen
            )));
        }
        if self.api_keys.is_empty() && !self.http.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--http {} is not a loopback address and no API key is configured, so anyone could start and end games: set --api-key ROLE:KEY (or ARCADE_API_KEYS), or keep --http on 127.0.0.1",
                self.http
            )));
        }
        if !self.nats_urls.is_empty() && self.database_url.is_none() {
            return Err(ConfigError::Invalid(
                "--nats-url makes this broker one of several replicas, which share their sessions through MySQL: set --database-url too".into(),
            ));
        }
        if !self.api_keys.is_empty() && self.cors_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::Invalid(
                "--cors-origin * would let any web page use the API keys of a browser's user: name the portal's origins instead".into(),
            ));
        }
        Ok(())
    }
}

impl Args {
    /// Merges flags, environment and the `--config` file over the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        #[cfg(not(feature = "dev"))]
        if self.dev || file.dev.unwrap_or(false) {
            return Err(ConfigError::Invalid(
                "--dev: this arcade-broker was built without the dev feature".into(),
            ));
        }
        let d = Config::loopback();
        let database_url = self
            .database_url
            .or(file.database_url)
            .filter(|u| !u.is_empty());
        let api_keys = if self.api_keys.is_empty() {
            file.api_keys
        } else {
            self.api_keys
        };
        let api_keys = api_keys
            .iter()
            .map(|k| {
                k.parse::<ApiKey>()
                    .map_err(|e| ConfigError::Invalid(format!("--api-key: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let player_keys = if self.player_keys.is_empty() {
            file.player_keys
        } else {
            self.player_keys
        };
        let player_keys = player_keys
            .iter()
            .map(|k| {
                k.parse::<KeySpec>()
                    .map_err(|e| ConfigError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let launch_timeout = match self.launch_timeout.or(file.launch_timeout) {
            Some(v) => seconds("launch-timeout", v)?,
            None => d.launch_timeout,
        };
        let heartbeat_timeout = match self.heartbeat_timeout.or(file.heartbeat_timeout) {
            Some(v) => seconds("heartbeat-timeout", v)?,
            None => d.heartbeat_timeout,
        };
        let join_token_ttl = match self.join_token_ttl.or(file.join_token_ttl) {
            Some(v) => seconds("join-token-ttl", v)?,
            None => d.join_token_ttl,
        };
        let public_url = match self.public_url.or(file.public_url) {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Some(u.trim_end_matches('/').to_owned())
            }
            Some(_) => {
                return Err(ConfigError::Invalid(
                    "--public-url must start with http:// or https://".into(),
                ))
            }
            None => None,
        };
        let workers = self.workers.or(file.workers).unwrap_or(d.workers);
        let client_ca = self.agent_client_ca.or(file.agent_client_ca);
        if workers == 0 || workers > 64 {
            return Err(ConfigError::Invalid("--workers must be 1 to 64".into()));
        }
        let config = Config {
            http: self.http.or(file.http).unwrap_or(d.http),
            agent_listen: self
                .agent_listen
                .or(file.agent_listen)
                .unwrap_or(d.agent_listen),
            agent_token: self
                .agent_token
                .or(file.agent_token)
                .filter(|t| !t.is_empty()),
            database_url,
            #[cfg(feature = "dev")]
            dev: (self.dev || file.dev.unwrap_or(false))
                .then(crate::dev::DevConfig::from_current_exe),
            launch_timeout,
            heartbeat_timeout,
            cors_origins: if self.cors_origins.is_empty() {
                file.cors_origins
            } else {
                self.cors_origins
            },
            workers,
            api_keys,
            player_keys,
            public_url,
            join_token_ttl,
            build_store: self
                .build_store
                .or(file.build_store)
                .unwrap_or(d.build_store),
            max_build_size: match self.max_build_size.or(file.max_build_size) {
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "--max-build-size must be at least 1 byte".into(),
                    ))
                }
                Some(n) => n,
                None => d.max_build_size,
            },
            http_tls: pair(
                "http-tls-cert",
                self.http_tls_cert.or(file.http_tls_cert),
                "http-tls-key",
                self.http_tls_key.or(file.http_tls_key),
            )?,
            agent_tls: pair(
                "agent-tls-cert",
                self.agent_tls_cert.or(file.agent_tls_cert),
                "agent-tls-key",
                self.agent_tls_key.or(file.agent_tls_key),
            )?
            .map(|(cert, key)| AgentTls {
                cert,
                key,
                client_ca: client_ca.clone(),
            }),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            shutdown_grace: d.shutdown_grace,
            host_idle_after: match self.host_idle_after.or(file.host_idle_after) {
                Some(v) if (0.05..=30.0 * 86_400.0).contains(&v) => Duration::from_secs_f64(v),
                Some(_) => {
                    return Err(ConfigError::Invalid(
                        "--host-idle-after must be 0.05 seconds to 30 days".into(),
                    ))
                }
                None => d.host_idle_after,
            },
            placement: self.placement.or(file.placement).unwrap_or_default().into(),
            max_sessions_per_user: match self.max_sessions_per_user.or(file.max_sessions_per_user) {
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "--max-sessions-per-user must be at least 1".into(),
                    ))
                }
                other => other,
            },
            nats_urls: if self.nats_urls.is_empty() {
                file.nats_urls
            } else {
                self.nats_urls
            },
            webhooks: crate::events::webhooks::WebhookConfig::from_flags(
                if self.webhooks.is_empty() {
                    file.webhooks
                } else {
                    self.webhooks
                },
                self.webhook_secret.or(file.webhook_secret),
                if self.webhook_types.is_empty() {
                    file.webhook_types
                } else {
                    self.webhook_types
                },
            )?,
            broker_id: match self.broker_id.or(file.broker_id) {
                Some(id)
                    if id.is_empty()
                        || id.len() > 128
                        || !id.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    return Err(ConfigError::Invalid(
                        "--broker-id must be 1 to 128 visible ASCII characters".into(),
                    ))
                }
                other => other,
            },
        };
        if config.agent_tls.is_none() && client_ca.is_some() {
            return Err(ConfigError::Invalid(
                "--agent-client-ca needs --agent-tls-cert and --agent-tls-key".into(),
            ));
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            "launch_timeout = 3\nheartbeat_timeout = 2\nhttp = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "arcade-broker",
            "--config",
            path.to_str().unwrap(),
            "--launch-timeout",
            "7",
        ])
        .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(c.launch_timeout, Duration::from_secs(7));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(2));
        assert_eq!(c.http.port(), 9000);
    }

    #[test]
    fn refuses_open_agent_port_without_token() {
        let args =
            Args::try_parse_from(["arcade-broker", "--agent-listen", "0.0.0.0:7070"]).unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("--agent-token"), "{err}");
        let args = Args::try_parse_from([
            "arcade-broker",
            "--agent-listen",
            "0.0.0.0:7070",
            "--agent-token",
            "t",
        ])
        .unwrap();
        assert!(args.resolve().is_ok());
    }

    #[test]
    fn player_keys_are_files_or_hs256_secrets_and_an_empty_secret_is_refused() {
        let args = Args::try_parse_from([
            "arcade-broker",
            "--player-key",
            "/etc/arcade/portal.pem",
            "--player-key",
            "hs256:shared-secret",
        ])
        .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(
            c.player_keys,
            vec![
                KeySpec::File("/etc/arcade/portal.pem".into()),
                KeySpec::Hs256(b"shared-secret".to_vec())
            ]
        );
        let args = Args::try_parse_from(["arcade-broker", "--player-key", "hs256:"]).unwrap();
        assert!(args.resolve().unwrap_err().to_string().contains("secret"));
    }

    #[test]
    fn refuses_open_api_without_keys() {
        let args = Args::try_parse_from(["arcade-broker", "--http", "0.0.0.0:8080"]).unwrap();
        assert!(args.resolve().unwrap_err().to_string().contains("loopback"));
    }

    #[test]
    fn keys_open_the_api_to_the_network_but_not_to_any_origin() {
        let key = "portal:0123456789abcdef";
        let args =
            Args::try_parse_from(["arcade-broker", "--http", "0.0.0.0:8080", "--api-key", key])
                .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(c.api_keys.len(), 1);
        let args = Args::try_parse_from(["arcade-broker", "--api-key", key, "--cors-origin", "*"])
            .unwrap();
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--cors-origin"));
        let args =
            Args::try_parse_from(["arcade-broker", "--api-key", "root:0123456789abcdef"]).unwrap();
        assert!(args.resolve().unwrap_err().to_string().contains("role"));
    }

    #[test]
    fn every_flag_can_come_from_the_file() {
        use clap::CommandFactory;
        for arg in Args::command().get_arguments() {
            let key = arg.get_id().as_str();
            if ["config", "help", "version"].contains(&key) {
                continue;
            }
            // A value of the wrong type is another error; only an unknown key says so.
            let err = toml::from_str::<FileConfig>(&format!("{key} = []"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                !err.contains("unknown field"),
                "--{key} has no key in the --config file: {err}"
            );
        }
    }

    #[test]
    fn tls_settings_come_from_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            "http_tls_cert = \"api.pem\"\nhttp_tls_key = \"api.key\"\nagent_tls_cert = \"link.pem\"\nagent_tls_key = \"link.key\"\nagent_client_ca = \"ca.pem\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let args =
            Args::try_parse_from(["arcade-broker", "--config", path.to_str().unwrap()]).unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(
            c.http_tls,
            Some((PathBuf::from("api.pem"), PathBuf::from("api.key")))
        );
        assert_eq!(
            c.agent_tls,
            Some(AgentTls {
                cert: "link.pem".into(),
                key: "link.key".into(),
                client_ca: Some("ca.pem".into()),
            })
        );
        assert_eq!(c.log_format, LogFormat::Json);
        // A flag completes what the file began, and wins over it.
        std::fs::write(&path, "http_tls_key = \"file.key\"\n").unwrap();
        let args = Args::try_parse_from([
            "arcade-broker",
            "--config",
            path.to_str().unwrap(),
            "--http-tls-cert",
            "flag.pem",
        ])
        .unwrap();
        assert_eq!(
            args.resolve().unwrap().http_tls,
            Some((PathBuf::from("flag.pem"), PathBuf::from("file.key")))
        );
        let half = Args::try_parse_from(["arcade-broker", "--agent-tls-cert", "a.pem"]).unwrap();
        assert!(half
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--agent-tls-key"));
    }

    #[test]
    fn replicas_need_a_database() {
        let args =
            Args::try_parse_from(["arcade-broker", "--nats-url", "nats://127.0.0.1:4222"]).unwrap();
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--database-url"));
        let args = Args::try_parse_from([
            "arcade-broker",
            "--nats-url",
            "nats://a:4222,nats://b:4222",
            "--database-url",
            "mysql://u@db/arcade",
        ])
        .unwrap();
        assert_eq!(args.resolve().unwrap().nats_urls.len(), 2);
    }

    #[test]
    fn a_broker_id_is_printable_and_bounded() {
        for bad in ["", "b 1", &"b".repeat(129)] {
            let args = Args::try_parse_from(["arcade-broker", "--broker-id", bad]).unwrap();
            assert!(args.resolve().is_err(), "{bad:?}");
        }
        let args = Args::try_parse_from(["arcade-broker", "--broker-id", "b1.eu-west"]).unwrap();
        assert_eq!(
            args.resolve().unwrap().broker_id.as_deref(),
            Some("b1.eu-west")
        );
    }

    #[test]
    fn refuses_silly_timeouts() {
        let args = Args::try_parse_from(["arcade-broker", "--launch-timeout", "0"]).unwrap();
        assert!(args.resolve().is_err());
    }
}
