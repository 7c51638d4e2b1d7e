//! SIGTERM/SIGINT: the first asks for a graceful drain, the second exits at once.
//!
//! Signals are awaited on a small tokio runtime on its own thread; the pipeline itself only sees
//! an `AtomicBool`, so no part of the data path depends on how shutdown was requested.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

/// Exit status after a second signal (128 + SIGINT, as shells report it).
pub const FORCED_EXIT: i32 = 130;

/// Sets `stop` on the first SIGTERM or SIGINT and exits the process on the second.
pub fn install(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the signal runtime")?;
    // Registered before this function returns, so no early signal is missed.
    let (mut term, mut int) = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("fanout-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut received = 0;
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    received += 1;
                    if received == 1 {
                        tracing::info!(
                            "{name}: draining and committing; send again to exit at once"
                        );
                        stop.store(true, Ordering::Relaxed);
                    } else {
                        tracing::warn!("{name} again: exiting without draining");
                        std::process::exit(FORCED_EXIT);
                    }
                }
            })
        })
        .context("starting the signal thread")?;
    Ok(())
}
