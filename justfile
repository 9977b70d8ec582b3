# Shotledger tasks. Run them as `./just RECIPE` (it installs `just` into .tools/ when the
# machine has none) or with your own `just`. CI (.ci/run) calls `./just run`, `./just lint`
# and `./just test`, exactly as the README writes them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Install what a fresh Debian machine lacks (libpq, chromium, chromedriver) and start PostgreSQL.
setup:
    bash scripts/setup.sh

# Formatting, clippy with warnings as errors, the crate-edge table, the toolchain pin and
# the drift check of schema.rs against the migrations.
lint: check-crate-edges check-toolchain check-schema
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The crate-edge table (scripts/check-crate-edges.sh): ledger-core depends on no I/O
# crate, settings not on ledger-store, capture not on ledger-*, and so on.
check-crate-edges:
    bash scripts/check-crate-edges.sh

# The old name of the core's purity check, now one row of the crate-edge table.
check-core-purity: check-crate-edges

# rust-toolchain.toml, the workspace's rust-version and the lockfile agree.
check-toolchain:
    bash scripts/check-toolchain.sh

# schema.rs declares exactly the tables and columns the migrations create, on a fresh
# SQLite file and a fresh PostgreSQL schema (setup starts PostgreSQL).
check-schema: setup
    cargo test -p ledger-store --test it migrations::schema_rs_matches_what_the_migrations_create -- --exact

# Every test, on SQLite and PostgreSQL, with a real browser for captures; then the schema fuzzer.
test: setup
    cargo test --workspace
    bash scripts/fuzz-api.sh

# Schemathesis against the api-server's own /openapi.json (no 500, nothing undocumented).
fuzz-api:
    bash scripts/fuzz-api.sh

# Start the api-server (:8080) and the webhook-receiver (:8081) on the embedded SQLite
# default (data/shotledger.db) with demo payments (config/run.toml), nothing else to set up.
# `just run --config FILE` uses FILE instead of config/run.toml.
run *ARGS:
    bash scripts/run.sh {{ARGS}}

# Benchmarks (release builds), issue 11: the capture pool, then the ledger store and the HTTP
# API against their baselines in one run (scripts/bench/run.sh), ending with the summary
# (target/bench/summary.md; docs/PERFORMANCE.md copies it). `just bench --quick`: fewer cells.
bench *ARGS: setup
    python3 scripts/bench-playwright.py --install-only
    cargo run --release -p capture --example capture_bench 40
    bash scripts/bench/run.sh {{ARGS}}
