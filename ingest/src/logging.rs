//! The log set-up every fleetpulse binary shares: `RUST_LOG` or a default
//! filter, colour only on a terminal, and every configured secret cut from
//! the lines (`secrets::RedactingWriter`).

use std::io::IsTerminal;

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG`
/// is not set.
pub fn init(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(crate::secrets::RedactingWriter::new(std::io::stderr))
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
