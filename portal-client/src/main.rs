//! `arcade`: the command line over Arcade's HTTP API. See [`portal_client::cli`].

use std::process::ExitCode;

use clap::Parser;
use portal_client::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors, --help and --version: clap prints and exits (2 for usage errors).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("arcade: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(cli::run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        // `arcade sessions | head`: the reader has what it wanted.
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", cli::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
