//! Each command: open what it needs, call the store (or the api-server's and the
//! receiver's library code, where the rule lives there), and build its [`Report`].

use std::io::BufRead;
use std::path::Path;

use api_server::service::metering;
use api_server::wire::{AccountView, TransactionView};
use ledger_core::{AccountId, Credits, IdempotencyKey, Retention, Timestamp};
use ledger_store::{Backend, DatabaseUrl, KeyBy, Outcome, Store, StoreError};
use serde_json::json;
use settings::{Settings, Sources};

use crate::cli::{AccountsCommand, Cli, Command, CreditsCommand, GrantArgs, KeysCommand};
use crate::outcome::{Failure, Report};

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> Result<Report, Failure> {
    let settings = Settings::load(Sources {
        file: cli.config.as_deref(),
        working_folder_defaults: true,
        env: std::env::vars().collect(),
    })
    .map_err(|e| Failure::usage(e.to_string()))?;
    let now = api_server::system_clock()();
    match cli.command {
        Command::Verify => verify(&open_current(&settings)?),
        Command::Compact => compact(&open_current(&settings)?, &settings, now),
        Command::Migrate(args) if args.check => migrate_check(&settings),
        Command::Migrate(_) => migrate(&settings),
        Command::Accounts(AccountsCommand::Create(args)) => {
            let password = match (args.password, args.password_stdin) {
                (Some(p), _) => Some(p),
                (None, true) => Some(password_from_stdin()?),
                (None, false) => None,
            };
            let store = open_current(&settings)?;
            let (account, balance) = metering::create_account_in(
                &store,
                settings.credits.signup_bonus,
                Some(args.email),
                password,
                now,
            )?;
            let view = AccountView {
                account_id: account.id.into_string(),
                email: account.email,
                balance,
            };
            let human = format!(
                "created account {} ({}), balance {}",
                view.account_id,
                view.email.as_deref().unwrap_or("no email"),
                view.balance
            );
            Ok(Report::ok(to_json(&view), human))
        }
        Command::Accounts(AccountsCommand::Show { account }) => {
            show_account(&open_current(&settings)?, &account, now)
        }
        Command::Credits(CreditsCommand::Grant(args)) => {
            grant(&open_current(&settings)?, args, now)
        }
        Command::Keys(KeysCommand::Revoke { key_id }) => {
            revoke_key(&open_current(&settings)?, &key_id, now)
        }
        Command::Reconcile => {
            let payments = webhook_receiver::payments_on(&settings, open_current(&settings)?)?;
            let report = payments.reconcile(now)?;
            let human = format!(
                "Polar listed {} paid orders: {} credited now, {} refunds applied, {} refused (see `webhook-receiver refused`)",
                report.orders, report.credited, report.refunds, report.refused
            );
            Ok(Report::ok(to_json(&report), human))
        }
        Command::Prune(args) => {
            let store = open_current(&settings)?;
            let before = now.plus_secs(-(i64::from(args.older_than) * 86_400));
            let report = if args.dry_run {
                store.maintenance().prunable(before)?
            } else {
                store.maintenance().prune(before)?
            };
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            let human = format!(
                "{verb} {} processed webhook deliveries, {} expired or revoked sessions and {} delivered or failed notifications older than {} days (before {})",
                report.webhook_deliveries,
                report.sessions,
                report.notification_deliveries,
                args.older_than,
                before.rfc3339()
            );
            let mut json = to_json(&report);
            json["dryRun"] = json!(args.dry_run);
            json["olderThanDays"] = json!(args.older_than);
            json["before"] = json!(before.rfc3339());
            Ok(Report::ok(json, human))
        }
        Command::Backup(args) => backup(&settings, &args.dest),
    }
}

/// The configured database, opened without migrating; refused (exit 2) when it does not
/// exist yet or has pending migrations: only `shotledger migrate` migrates.
fn open_current(settings: &Settings) -> Result<Store, Failure> {
    let store = open_existing(settings)?;
    let pending = store.pending_migrations()?;
    if !pending.is_empty() {
        return Err(Failure::usage(format!(
            "the database has {} pending migration(s) ({}); run `shotledger migrate` first",
            pending.len(),
            pending.join(", ")
        )));
    }
    Ok(store)
}

/// The configured database, opened without migrating; a SQLite file that does not exist
/// is refused rather than created.
fn open_existing(settings: &Settings) -> Result<Store, Failure> {
    let url = database_url(settings)?;
    if let Some(path) = url.sqlite_path() {
        if !path.is_file() {
            return Err(Failure::usage(format!(
                "database.url: there is no SQLite database at {}; run `shotledger migrate` first to create it, or point database.url (DATABASE_URL) at the right file",
                path.display()
            )));
        }
    }
    Ok(Store::open_without_migrating(
        &settings.database.url,
        &pool_options(settings),
    )?)
}

/// The configured pool, with nothing kept open in the background: one command opens what
/// it uses, and no pool thread is left opening a spare connection while the process exits.
fn pool_options(settings: &Settings) -> ledger_store::PoolOptions {
    ledger_store::PoolOptions {
        min_connections: 0,
        ..settings.database.pool_options()
    }
}

fn database_url(settings: &Settings) -> Result<DatabaseUrl, Failure> {
    DatabaseUrl::parse(&settings.database.url).map_err(|e| Failure::from(StoreError::from(e)))
}

fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

fn verify(store: &Store) -> Result<Report, Failure> {
    let report = store.maintenance().verify()?;
    let mut human = format!(
        "verified {} accounts and {} entries: ",
        report.accounts, report.entries
    );
    if report.violations.is_empty() {
        human.push_str("no violations");
    } else {
        human.push_str(&format!("{} violation(s)", report.violations.len()));
        for v in &report.violations {
            human.push_str(&format!("\n  {}: {}", v.account_id, v.message));
        }
    }
    let out = Report::ok(to_json(&report), human);
    Ok(if report.ok { out } else { out.failed() })
}

fn compact(store: &Store, settings: &Settings, now: Timestamp) -> Result<Report, Failure> {
    let months = settings.credits.retention_months;
    let retention = Retention::months(months)
        .map_err(|e| Failure::usage(format!("credits.retention_months: {e}")))?;
    let report = store.maintenance().compact(retention, now)?;
    let human = format!(
        "compacted {} accounts: {} entries and {} idempotency keys older than {months} months removed; balances unchanged",
        report.accounts, report.entries_removed, report.idempotency_keys_removed
    );
    let mut json = to_json(&report);
    json["retentionMonths"] = json!(months);
    Ok(Report::ok(json, human))
}

/// `migrate --check`: what is pending, changing nothing (a SQLite file that does not exist
/// is not created: everything is pending).
fn migrate_check(settings: &Settings) -> Result<Report, Failure> {
    let url = database_url(settings)?;
    let pending = match url.sqlite_path() {
        Some(path) if !path.is_file() => ledger_store::all_migrations()?
            .into_iter()
            .map(|(_, name)| name)
            .collect(),
        _ => Store::open_without_migrating(&settings.database.url, &pool_options(settings))?
            .pending_migrations()?,
    };
    let json = json!({ "upToDate": pending.is_empty(), "pending": pending });
    if pending.is_empty() {
        return Ok(Report::ok(
            json,
            format!("{}: no pending migrations", url.describe()),
        ));
    }
    let mut human = format!(
        "{}: {} pending migration(s); run `shotledger migrate`",
        url.describe(),
        pending.len()
    );
    for name in &pending {
        human.push_str(&format!("\n  {name}"));
    }
    Ok(Report::ok(json, human).failed())
}

/// `migrate`: applies what is pending (creating a new SQLite file).
fn migrate(settings: &Settings) -> Result<Report, Failure> {
    let url = database_url(settings)?;
    let store = Store::open_without_migrating(&settings.database.url, &pool_options(settings))?;
    let applied = store.migrate()?;
    let mut human = if applied.is_empty() {
        format!("{}: no pending migrations", url.describe())
    } else {
        format!("{}: applied {} migration(s)", url.describe(), applied.len())
    };
    for name in &applied {
        human.push_str(&format!("\n  {name}"));
    }
    Ok(Report::ok(json!({ "applied": applied }), human))
}

/// The password's first line on stdin, without its line ending.
fn password_from_stdin() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("--password-stdin: cannot read stdin: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// `accounts show ID|EMAIL`.
fn show_account(store: &Store, who: &str, now: Timestamp) -> Result<Report, Failure> {
    let id = if who.contains('@') {
        let email = api_server::service::accounts::valid_email(who)?;
        store
            .members()
            .login(&email)?
            .map(|l| l.member.account_id)
            .ok_or_else(|| Failure::failed(format!("no account has a login with email {email}")))?
    } else {
        AccountId::new(who.trim().to_owned())
    };
    let account = store
        .ledger()
        .account(&id)?
        .ok_or_else(|| Failure::failed(format!("account {} not found", id.as_str())))?;
    let balance = store.ledger().balance(&id, now)?.available;
    let plan = store.plans().subscription(&id, now)?;
    let keys = store.access().api_keys(&id)?.len();
    let plan_json = plan.as_ref().map(|p| {
        json!({
            "id": p.plan.id,
            "name": p.plan.name,
            "status": p.status.as_str(),
        })
    });
    let json = json!({
        "accountId": account.id.as_str(),
        "email": account.email,
        "balance": balance,
        "plan": plan_json,
        "keys": keys,
        "createdAt": account.created_at.rfc3339(),
    });
    let plan_text = match &plan {
        Some(p) => format!("{} ({}, {})", p.plan.name, p.plan.id, p.status.as_str()),
        None => "none".to_owned(),
    };
    let human = format!(
        "account  {}\nemail    {}\nbalance  {}\nplan     {}\nkeys     {} live\ncreated  {}",
        account.id.as_str(),
        account.email.as_deref().unwrap_or("-"),
        balance,
        plan_text,
        keys,
        account.created_at.rfc3339()
    );
    Ok(Report::ok(json, human))
}

/// `credits grant`: an adjustment as the admin API makes it, under the same idempotency.
fn grant(store: &Store, args: GrantArgs, now: Timestamp) -> Result<Report, Failure> {
    let amount: Credits = args
        .amount
        .trim()
        .parse()
        .map_err(|e| Failure::usage(format!("AMOUNT: {e}")))?;
    let operation = metering::adjustment(amount, &args.reason)?;
    let account = AccountId::new(args.account.trim().to_owned());
    let idempotency = match &args.idempotency_key {
        Some(raw) => {
            let key = IdempotencyKey::parse(raw.trim())
                .map_err(|e| Failure::usage(format!("--idempotency-key: {e}")))?;
            Some(metering::adjustment_idempotency(
                &account,
                key,
                amount,
                &args.reason,
            ))
        }
        None => None,
    };
    let applied = store
        .ledger()
        .apply(&account, idempotency.as_ref(), operation, now)?;
    let entry = match applied.result {
        Ok(Outcome::Entry(entry)) => entry,
        Ok(other) => {
            return Err(Failure::usage(format!(
                "internal error: an adjustment answered {other:?}"
            )))
        }
        Err(rule) => {
            return Err(Failure::failed(format!(
                "the ledger refused it, nothing changed: {rule}"
            )))
        }
    };
    let view = TransactionView::from(&entry);
    let human = if applied.replayed {
        format!(
            "replayed: entry {} ({} credits) was made earlier with this idempotency key; nothing granted now; balance {}",
            view.id, view.amount, applied.available
        )
    } else {
        format!(
            "entry {}: {} credits to {} ({}); balance {}",
            view.id,
            view.amount,
            account.as_str(),
            view.description,
            applied.available
        )
    };
    let json = json!({
        "transaction": to_json(&view),
        "replayed": applied.replayed,
        "balance": applied.available,
    });
    Ok(Report::ok(json, human))
}

/// `keys revoke KEY_ID`: the key stops authenticating at once (nothing caches keys).
fn revoke_key(store: &Store, key_id: &str, now: Timestamp) -> Result<Report, Failure> {
    let key_id = key_id.trim();
    let caller = store
        .access()
        .key_caller(KeyBy::Id(key_id))?
        .ok_or_else(|| {
            Failure::failed(format!(
                "no live API key {key_id} (unknown, or revoked already)"
            ))
        })?;
    if !store
        .access()
        .revoke_api_key(&caller.account_id, key_id, now)?
    {
        return Err(Failure::failed(format!(
            "no live API key {key_id} (revoked meanwhile)"
        )));
    }
    let human = format!(
        "revoked API key {key_id} of account {}",
        caller.account_id.as_str()
    );
    let json = json!({
        "keyId": key_id,
        "accountId": caller.account_id.as_str(),
        "revoked": true,
    });
    Ok(Report::ok(json, human))
}

/// `backup DEST`: SQLite only; PostgreSQL is refused with the `pg_dump` line to use.
fn backup(settings: &Settings, dest: &Path) -> Result<Report, Failure> {
    let url = database_url(settings)?;
    if url.backend() == Backend::Postgres {
        return Err(Failure::usage(format!(
            "backup copies SQLite files; {} is PostgreSQL: back it up with pg_dump, e.g. `pg_dump --format=custom --file={} \"$DATABASE_URL\"` (the value of database.url), and restore with pg_restore",
            url.describe(),
            shell_quote(&dest.display().to_string())
        )));
    }
    // A backup is what one takes before migrating: an old database is copied as it is.
    let store = open_existing(settings)?;
    let report = store.backup_sqlite(dest)?;
    let human = format!(
        "copied {} to {} ({} bytes)",
        url.describe(),
        report.path,
        report.bytes
    );
    Ok(Report::ok(to_json(&report), human))
}

/// `text` quoted for a POSIX shell when it needs to be.
fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
