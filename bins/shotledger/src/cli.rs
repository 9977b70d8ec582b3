//! The command line, declared with clap's derive: global flags and one subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Shotledger's operator CLI: runs against the configured database directly (SQLite or
/// PostgreSQL), with the servers' configuration (defaults, --config FILE, SHOTLEDGER__*
/// variables, DATABASE_URL). Exit codes: 0 ok; 1 the command ran and found a failure;
/// 2 a usage, configuration or database error.
#[derive(Debug, Parser)]
#[command(name = "shotledger", version)]
pub struct Cli {
    /// A configuration file layered over the defaults (as the servers' --config).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every ledger invariant; exit 1 when one is broken.
    Verify,
    /// Drop history older than credits.retention_months, keeping every balance exact.
    Compact,
    /// Apply pending database migrations (with --check: list them, change nothing, exit 1
    /// when there are any).
    Migrate(MigrateArgs),
    /// Create or show accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Grant or take away credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Ask Polar for paid orders the webhook receiver missed and credit them (once).
    Reconcile,
    /// Delete processed webhook deliveries, dead sessions and ended notifications older than DAYS.
    Prune(PruneArgs),
    /// An online, consistent copy of the SQLite database at DEST (never replaces a file).
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// List pending migrations and exit 1 if there are any; change nothing.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account (the signup bonus applies, as POST /admin/v1/accounts).
    Create(CreateArgs),
    /// Show an account by id or email: balance, plan, number of live keys.
    Show {
        /// The account id (acct_...) or the email of one of its logins.
        account: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The owner's email (the login).
    #[arg(long)]
    pub email: String,
    /// The owner's password (8 to 1024 characters); visible to other users of this
    /// machine in the process list: prefer --password-stdin.
    #[arg(long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from stdin (its first line).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// An `adjustment` entry, exactly as POST /admin/v1/accounts/{id}/credits: positive
    /// grants, negative takes away (never below zero).
    Grant(GrantArgs),
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The account id.
    pub account: String,
    /// Credits, at most three decimals (12, 0.5, -3).
    #[arg(allow_negative_numbers = true)]
    pub amount: String,
    /// Why (the entry's description, 1 to 500 characters).
    #[arg(long)]
    pub reason: String,
    /// Replays instead of granting twice; shared with the admin API's Idempotency-Key.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Revoke an API key by its id; it stops working at once.
    Revoke {
        /// The key's id (key_...), as GET /api/v1/keys lists it.
        key_id: String,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove what is older than this many days.
    #[arg(long, value_name = "DAYS")]
    pub older_than: u32,
    /// Count what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where the copy goes; must not exist.
    pub dest: PathBuf,
}
