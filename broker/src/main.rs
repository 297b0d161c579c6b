//! `arcade-broker`: parses flags, sets up logging, runs [`broker::run`] until SIGTERM or SIGINT.
//! Started as `arcade-broker demo-game ...`, it is the `--dev` demo game instead (with the `dev`
//! feature).

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dev")]
    {
        let raw: Vec<String> = std::env::args().collect();
        if raw.get(1).map(String::as_str) == Some(broker::dev::DEMO_GAME_ARG) {
            std::process::exit(broker::dev::demo_game_main(&raw[2..]));
        }
    }
    let config = broker::Args::parse().resolve()?;
    daemon::logs::init(config.log_format);
    let listeners = broker::Listeners::bind(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
        broker::run(config, listeners, shutdown).await
    })?;
    Ok(())
}
