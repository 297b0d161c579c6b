//! The `arcade-agent` command line (flags as in API.md), turned into a [`Config`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use protocol::wire::PortRange;
use protocol::HostId;

use crate::catalog::{Catalog, CatalogError};
use crate::{Backoff, Config};

/// `arcade-agent`: runs games on this host for an Arcade broker.
#[derive(Debug, Clone, Parser)]
#[command(name = "arcade-agent", version, about)]
pub struct Args {
    /// Logs for people (`text`) or JSON lines for log shippers (`json`).
    #[arg(long, env = "ARCADE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: daemon::LogFormat,
    /// The broker's agent address, or several replicas' (comma-separated; a name that resolves
    /// to several addresses counts as several): one link at a time, the next address when it
    /// fails.
    #[arg(long, env = "ARCADE_BROKER", default_value = "127.0.0.1:7070")]
    pub broker: String,
    /// The games this host can run (TOML).
    #[arg(long, env = "ARCADE_CATALOG")]
    pub catalog: PathBuf,
    /// Unique per host; by default the machine's hostname.
    #[arg(long, env = "ARCADE_HOST_ID")]
    pub host_id: Option<String>,
    /// The IP returned to clients; by default the local address of the broker connection.
    #[arg(long, env = "ARCADE_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// The shared agent token.
    #[arg(long, env = "ARCADE_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Concurrent games on this host; by default the number of logical CPUs.
    #[arg(long, env = "ARCADE_MAX_SESSIONS")]
    pub max_sessions: Option<u32>,
    /// One port per session, handed to the game: LO-HI.
    #[arg(long, env = "ARCADE_PORT_RANGE", default_value = "20000-20999", value_parser = parse_port_range)]
    pub port_range: PortRange,
    /// Game logs and what the agent needs to find its games again; by default a per-user data
    /// directory.
    #[arg(long, env = "ARCADE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// SIGTERM to the game's process group, then SIGKILL after this many seconds.
    #[arg(long, env = "ARCADE_STOP_GRACE", default_value_t = 5.0)]
    pub stop_grace: f64,
    /// Serve Prometheus metrics at http://ADDR/metrics (games running, launches and stops by
    /// outcome, state writes); off by default.
    #[arg(long, env = "ARCADE_AGENT_METRICS", value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Ended sessions' game logs are removed this many days after their last write.
    #[arg(long, env = "ARCADE_LOG_RETENTION", default_value_t = 7.0)]
    pub log_retention: f64,
    /// On SIGTERM or SIGINT, stop every game; by default they keep running and the agent finds
    /// them again when it starts.
    #[arg(long, env = "ARCADE_STOP_GAMES_ON_EXIT")]
    pub stop_games_on_exit: bool,
    /// Start games as this (unprivileged) user, with its primary group only. The agent must
    /// run as root for this.
    #[arg(long, env = "ARCADE_RUN_AS")]
    pub run_as: Option<String>,
    /// Connect to the broker over TLS, trusting this CA (PEM) for its certificate.
    #[arg(long, env = "ARCADE_BROKER_CA")]
    pub broker_ca: Option<PathBuf>,
    /// The name the broker's certificate must carry; by default the host part of --broker.
    #[arg(long, env = "ARCADE_BROKER_NAME")]
    pub broker_name: Option<String>,
    /// This agent's client certificate (PEM), for a broker that requires mutual TLS.
    #[arg(long, env = "ARCADE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "ARCADE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Disk, in bytes, that central games' unpacked builds may use under --state-dir/builds;
    /// past it, builds no session and no current game needs are removed, least recently used
    /// first.
    #[arg(long, env = "ARCADE_BUILD_CACHE", value_name = "BYTES", default_value_t = crate::DEFAULT_BUILD_CACHE)]
    pub build_cache: u64,
    /// A label of this host, e.g. region=eu-west (repeatable): starts and games can require
    /// it.
    #[arg(long = "label", env = "ARCADE_LABELS", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// This host's GPU indexes, e.g. 0,1,2,3: each is given to one session at a time (a
    /// game's catalog `gpus`).
    #[arg(long, env = "ARCADE_GPUS", value_name = "LIST", value_parser = parse_gpus)]
    pub gpus: Option<Gpus>,
}

/// `--gpus`: distinct GPU indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpus(pub Vec<u32>);

/// Parses `--label KEY=VALUE`.
fn parse_label(s: &str) -> Result<(String, String), protocol::labels::LabelError> {
    protocol::labels::parse(s)
}

/// Parses `--gpus 0,1,2,3`: distinct indexes, at most [`protocol::catalog::MAX_GPUS`].
pub fn parse_gpus(s: &str) -> Result<Gpus, String> {
    let mut gpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let g: u32 = part
            .parse()
            .map_err(|_| format!("{part:?} is not a GPU index"))?;
        if gpus.contains(&g) {
            return Err(format!("GPU {g} is listed twice"));
        }
        gpus.push(g);
    }
    if gpus.len() > protocol::catalog::MAX_GPUS as usize {
        return Err(format!("at most {} GPUs", protocol::catalog::MAX_GPUS));
    }
    Ok(Gpus(gpus))
}

/// Why the command line does not make a config.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// The catalog cannot be loaded.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog has no game.
    #[error("catalog {0} has no game: add a [games.NAME] table")]
    EmptyCatalog(PathBuf),
    /// A flag's value is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Why a `--port-range` value is not a port range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// There is no `-`.
    #[error("{0:?} is not LO-HI")]
    NotARange(String),
    /// One end is not a port number.
    #[error("{0:?} is not a port")]
    NotAPort(String),
    /// `LO` is 0 or above `HI`.
    #[error("{0:?}: need 1 <= LO <= HI")]
    Order(String),
}

/// Parses `LO-HI`.
pub fn parse_port_range(s: &str) -> Result<PortRange, PortRangeError> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| PortRangeError::NotARange(s.to_owned()))?;
    let lo: u16 = lo
        .trim()
        .parse()
        .map_err(|_| PortRangeError::NotAPort(lo.to_owned()))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .map_err(|_| PortRangeError::NotAPort(hi.to_owned()))?;
    if lo == 0 || lo > hi {
        return Err(PortRangeError::Order(s.to_owned()));
    }
    Ok(PortRange { lo, hi })
}

fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("arcade-agent");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/arcade-agent");
    }
    std::env::temp_dir().join(format!("arcade-agent-{}", nix::unistd::getuid()))
}

/// A host id from a hostname: characters an id may not hold become `-`.
pub fn host_id_from_hostname(hostname: &str) -> Result<HostId, ArgsError> {
    let cleaned: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    HostId::new(cleaned.trim_start_matches('.')).map_err(|e| {
        ArgsError::Invalid(format!(
            "cannot make a host id of the hostname: {e}; pass --host-id"
        ))
    })
}

impl Args {
    /// Loads the catalog and fills in defaults.
    pub fn into_config(self) -> Result<Config, ArgsError> {
        let catalog = Catalog::load(&self.catalog)?;
        if catalog.is_empty() {
            return Err(ArgsError::EmptyCatalog(self.catalog));
        }
        let hostname = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let host_id = match self.host_id {
            Some(id) => {
                HostId::new(id).map_err(|e| ArgsError::Invalid(format!("--host-id: {e}")))?
            }
            None => host_id_from_hostname(&hostname)?,
        };
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let max_sessions = self.max_sessions.unwrap_or(cpus);
        if max_sessions == 0 {
            return Err(ArgsError::Invalid(
                "--max-sessions must be at least 1".into(),
            ));
        }
        if !(0.0..=3600.0).contains(&self.stop_grace) {
            return Err(ArgsError::Invalid(
                "--stop-grace must be 0 to 3600 seconds".into(),
            ));
        }
        if !(0.0..=36_500.0).contains(&self.log_retention) {
            return Err(ArgsError::Invalid(
                "--log-retention must be 0 to 36500 days".into(),
            ));
        }
        let brokers = crate::brokers::parse_list(&self.broker)
            .map_err(|e| ArgsError::Invalid(e.to_string()))?;
        let tls = match &self.broker_ca {
            Some(ca) => {
                let name = match &self.broker_name {
                    Some(n) => n.clone(),
                    None => crate::brokers::broker_host(&brokers[0]),
                };
                let client = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
                let mut tls = crate::tls::Tls::new(ca, &name, client)
                    .map_err(|e| ArgsError::Invalid(e.to_string()))?;
                tls.name_from_broker = self.broker_name.is_none();
                Some(tls)
            }
            None if self.tls_cert.is_some() => {
                return Err(ArgsError::Invalid(
                    "--tls-cert needs --broker-ca: client certificates are only used over TLS"
                        .into(),
                ))
            }
            None => None,
        };
        Ok(Config {
            tls,
            brokers,
            catalog,
            host_id,
            hostname,
            advertise_ip: self.advertise_ip,
            token: self.token,
            cpus,
            max_sessions,
            port_range: self.port_range,
            state_dir: self.state_dir.unwrap_or_else(default_state_dir),
            stop_grace: Duration::from_secs_f64(self.stop_grace),
            log_retention: Duration::from_secs_f64(self.log_retention * 86_400.0),
            metrics: self.metrics,
            backoff: Backoff::default(),
            stop_games_on_exit: self.stop_games_on_exit,
            build_cache: self.build_cache,
            labels: {
                let labels: protocol::labels::Labels = self.labels.into_iter().collect();
                protocol::labels::check(&labels).map_err(|e| ArgsError::Invalid(e.to_string()))?;
                labels
            },
            gpus: self.gpus.map(|g| g.0).unwrap_or_default(),
            run_as: self
                .run_as
                .as_deref()
                .map(crate::games::RunAs::lookup)
                .transpose()
                .map_err(|e| ArgsError::Invalid(e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lists_are_distinct_indexes() {
        assert_eq!(parse_gpus("0,1, 3").unwrap(), Gpus(vec![0, 1, 3]));
        assert_eq!(parse_gpus("").unwrap(), Gpus(vec![]));
        assert!(parse_gpus("0,0").unwrap_err().contains("twice"));
        assert!(parse_gpus("a").is_err());
        let many = (0..=protocol::catalog::MAX_GPUS)
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_gpus(&many).is_err());
        let args = Args::try_parse_from([
            "arcade-agent",
            "--catalog",
            "c.toml",
            "--label",
            "region=eu",
            "--label",
            "gpu=a100",
            "--gpus",
            "0,1",
        ])
        .unwrap();
        assert_eq!(args.labels.len(), 2);
        assert_eq!(args.gpus, Some(Gpus(vec![0, 1])));
        assert!(Args::try_parse_from(["arcade-agent", "--catalog", "c", "--label", "x"]).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            parse_port_range("20000-20999").unwrap(),
            PortRange {
                lo: 20000,
                hi: 20999
            }
        );
        for bad in ["", "1", "2-1", "0-5", "a-b", "1-70000"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
        let message = |s: &str| parse_port_range(s).map(|_| ()).unwrap_err().to_string();
        assert_eq!(message("1"), r#""1" is not LO-HI"#);
        assert_eq!(message("a-b"), r#""a" is not a port"#);
        assert_eq!(message("1-70000"), r#""70000" is not a port"#);
        assert_eq!(message("2-1"), r#""2-1": need 1 <= LO <= HI"#);
    }

    #[test]
    fn hostnames_become_ids() {
        assert_eq!(host_id_from_hostname("gpu 01").unwrap().as_str(), "gpu-01");
        assert_eq!(host_id_from_hostname(".x").unwrap().as_str(), "x");
    }
}
