use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CATALYNX_LOG")
                // sqlx warns of connection parameters it does not know
                // with their values, which may be passwords.
                .unwrap_or_else(|_| {
                    EnvFilter::new("info,sqlx=warn,sea_orm=warn,sqlx_postgres::options=error")
                }),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: log collectors and
        // files get plain lines.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = catalynx::config::Cli::parse();
    match catalynx::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line naming the setting and the cause; no backtrace.
            eprintln!("error: {}", catalynx::error::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
