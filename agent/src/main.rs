//! `arcade-agent`: parses flags, sets up logging, runs [`agent::run`] until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let args = agent::cli::Args::parse();
    daemon::logs::init(args.log_format);
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            daemon::wait_for_signal().await;
            signals.cancel();
        });
        agent::run(config, shutdown).await
    })?;
    Ok(())
}
