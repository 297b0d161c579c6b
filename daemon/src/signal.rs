//! The signal to stop: SIGTERM (a service manager, `kill`) or SIGINT (Ctrl-C).

/// Waits for SIGTERM or SIGINT (Ctrl-C alone if the handlers cannot be installed), then logs
/// that the program is shutting down.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("signal received; shutting down");
}
