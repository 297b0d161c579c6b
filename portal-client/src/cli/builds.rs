//! `arcade build push FILE` and `arcade builds`: a build uploaded under its sha256 (printed
//! first, with a progress line on a terminal), and the builds listed.

use std::io::IsTerminal as _;
use std::path::Path;

use protocol::api::{Build, BuildList};
use protocol::BuildId;
use tokio::io::AsyncReadExt as _;

use super::output::{render, timestamp, Table};
use super::CliError;
use crate::client::Client;

/// The sha256 of the file at `path`, read in blocks: its build's name, and its size.
async fn hash(path: &Path) -> Result<(BuildId, u64), CliError> {
    let file_error = |source| CliError::File {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(file_error)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(file_error)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
    let digest: [u8; 32] = ctx
        .finish()
        .as_ref()
        .try_into()
        .map_err(|_| CliError::Token("sha256 is 32 bytes".into()))?;
    Ok((BuildId::of_digest(&digest), size))
}

/// `arcade build push FILE`.
pub(super) async fn push(client: &Client, path: &Path, json: bool) -> Result<String, CliError> {
    let (id, size) = hash(path).await?;
    // The name first: a script has it even if the upload fails.
    if !json {
        eprintln!("{id}");
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| CliError::File {
            path: path.to_owned(),
            source,
        })?;
    let terminal = std::io::stderr().is_terminal();
    let progress = move |sent: u64| {
        if terminal && size > 0 {
            eprint!("\ruploading {:>3}%", sent * 100 / size);
        }
    };
    let answer = client.put_build(&id, file, size, progress).await;
    if terminal {
        eprintln!();
    }
    let (build, new) = answer?;
    render(json, &build, |b| {
        format!(
            "{} {} ({} bytes, {})\n",
            if new { "stored" } else { "already stored:" },
            b.build,
            b.size,
            b.kind.as_str()
        )
    })
}

/// `arcade builds`.
pub(super) async fn list(client: &Client, json: bool) -> Result<String, CliError> {
    let list = client.builds().await?;
    render(json, &list, |l: &BuildList| {
        let mut t = Table::new(&["BUILD", "SIZE", "KIND", "CREATED"]);
        for b in &l.builds {
            let b: &Build = b;
            t.row(vec![
                b.build.to_string(),
                b.size.to_string(),
                b.kind.as_str().to_owned(),
                timestamp(b.created_at),
            ]);
        }
        t.render()
    })
}
