//! `arcade logs`: a game's output, and with `--follow` what it writes next, until its session
//! is over. Following polls `?from=` the last answer's end, so nothing is printed twice.

use std::io::Write;
use std::time::Duration;

use protocol::SessionId;

use crate::cli::error::CliError;
use crate::client::{Client, LogRange};

/// The pause between two looks at a followed log.
const POLL: Duration = Duration::from_millis(500);

/// Prints the last `tail` lines of `id`'s output to `out`; with `follow`, then what follows,
/// until the session is over and its log has nothing more.
pub async fn print(
    client: &Client,
    id: &SessionId,
    tail: u32,
    follow: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut log = client.session_log(id, LogRange::Tail(tail)).await?;
    loop {
        out.write_all(&log.text).map_err(CliError::Output)?;
        out.flush().map_err(CliError::Output)?;
        if !follow {
            return Ok(());
        }
        if log.text.is_empty() {
            // Nothing new: over when the session is (its output is all written by then).
            if client.get_session(id).await?.status.is_terminal() {
                let last = client.session_log(id, LogRange::From(log.end)).await?;
                out.write_all(&last.text).map_err(CliError::Output)?;
                return out.flush().map_err(CliError::Output);
            }
            tokio::time::sleep(POLL).await;
        }
        log = client.session_log(id, LogRange::From(log.end)).await?;
    }
}
