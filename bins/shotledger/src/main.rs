//! `shotledger`: the operator CLI (ADR 13). It reads the servers' configuration, opens
//! the configured database directly through `ledger-store` (never over HTTP), runs one
//! command, and prints text, or one JSON object with `--json`.
//!
//! Exit codes: 0 ok; 1 the command ran and found a failure (violations, pending
//! migrations under `--check`, a grant the ledger refused, an unknown account or key);
//! 2 usage, configuration or database errors, the message on stderr naming what to fix.
//!
//! No command but `migrate` migrates: on a database with pending migrations every other
//! command (but `backup`) refuses with exit 2 and "run `shotledger migrate` first".

mod cli;
mod commands;
mod outcome;

use std::process::ExitCode;

use clap::Parser;

use crate::outcome::Failure;

fn main() -> ExitCode {
    // Only warnings by default, and only on stderr: stdout is the command's answer.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; a usage error to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let json = cli.json;
    match commands::run(cli) {
        Ok(report) => {
            if json {
                println!("{}", report.json);
            } else {
                println!("{}", report.human.trim_end());
            }
            ExitCode::from(report.code)
        }
        Err(Failure { code, message }) => {
            eprintln!("shotledger: {message}");
            ExitCode::from(code)
        }
    }
}
