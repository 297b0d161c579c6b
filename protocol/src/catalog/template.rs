//! Placeholders (`{mode}`, `{config}`, `{port}`, `{port1}`..., `{slot}`, `{session_id}`) and the
//! strings that hold them: parsed once at load, expanded in a single pass at launch.

use super::{EntryError, MAX_PORTS};

/// A placeholder of a catalog string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{mode}`.
    Mode,
    /// `{config}`.
    Config,
    /// `{port}` (0), `{port1}`, ...
    Port(u16),
    /// `{slot}`.
    Slot,
    /// `{session_id}`.
    SessionId,
    /// `{build}`: the directory of a central game's unpacked build (or its one file).
    Build,
    /// `{gpu}`: the session's GPUs, comma-separated.
    Gpu,
}

impl Placeholder {
    /// Its name, between the braces.
    pub fn name(self) -> String {
        match self {
            Self::Mode => "mode".into(),
            Self::Config => "config".into(),
            Self::Port(0) => "port".into(),
            Self::Port(n) => format!("port{n}"),
            Self::Slot => "slot".into(),
            Self::SessionId => "session_id".into(),
            Self::Build => "build".into(),
            Self::Gpu => "gpu".into(),
        }
    }

    /// `{portN}`, N from 1 to [`MAX_PORTS`] - 1.
    fn port(name: &str) -> Option<Self> {
        let n: u16 = name.strip_prefix("port")?.parse().ok()?;
        (1..MAX_PORTS).contains(&n).then_some(Self::Port(n))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Placeholder),
}

/// A string with `{placeholder}`s, parsed once at load so expansion is a single pass: a value
/// that itself contains `{port}` is never expanded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

/// What a session fills the placeholders with.
pub struct Values<'a> {
    /// `{mode}`.
    pub mode: &'a str,
    /// `{config}`, if the session has one.
    pub config: Option<&'a str>,
    /// `{port}`, `{port1}`, ...
    pub ports: &'a [String],
    /// `{slot}`.
    pub slot: &'a str,
    /// `{session_id}`.
    pub session_id: &'a str,
    /// `{build}`, for a central game.
    pub build: Option<&'a str>,
    /// `{gpu}`: the session's GPUs, comma-separated (empty without any).
    pub gpu: &'a str,
}

impl Template {
    /// Parses `s`; an unknown placeholder or an unclosed brace is refused.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| EntryError::UnclosedBrace(s.to_owned()))?;
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let var = match &rest[open + 1..close] {
                "mode" => Placeholder::Mode,
                "config" => Placeholder::Config,
                "port" => Placeholder::Port(0),
                "slot" => Placeholder::Slot,
                "session_id" => Placeholder::SessionId,
                "build" => Placeholder::Build,
                "gpu" => Placeholder::Gpu,
                other if Placeholder::port(other).is_some() => {
                    Placeholder::port(other).unwrap_or(Placeholder::Port(0))
                }
                other => {
                    return Err(EntryError::UnknownPlaceholder {
                        name: other.to_owned(),
                        template: s.to_owned(),
                    })
                }
            };
            pieces.push(Piece::Var(var));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    /// Whether it holds `placeholder`.
    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.0.contains(&Piece::Var(placeholder))
    }

    /// The highest `{portN}` it uses.
    pub fn max_port(&self) -> Option<u16> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Piece::Var(Placeholder::Port(n)) => Some(*n),
                _ => None,
            })
            .max()
    }

    /// Fills the placeholders in one pass; the placeholder a session has no value for, if
    /// any.
    pub fn expand(&self, v: &Values<'_>) -> Result<String, Placeholder> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(Placeholder::Mode) => out.push_str(v.mode),
                Piece::Var(Placeholder::Config) => {
                    out.push_str(v.config.ok_or(Placeholder::Config)?)
                }
                Piece::Var(Placeholder::Port(n)) => {
                    let port = v.ports.get(usize::from(*n));
                    out.push_str(port.ok_or(Placeholder::Port(*n))?);
                }
                Piece::Var(Placeholder::Slot) => out.push_str(v.slot),
                Piece::Var(Placeholder::SessionId) => out.push_str(v.session_id),
                Piece::Var(Placeholder::Build) => out.push_str(v.build.ok_or(Placeholder::Build)?),
                Piece::Var(Placeholder::Gpu) => out.push_str(v.gpu),
            }
        }
        Ok(out)
    }
}
