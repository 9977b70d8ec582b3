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

# Formatting, clippy with warnings as errors, and the core's purity.
lint: check-core-purity
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# ledger-core must not depend on any I/O crate.
check-core-purity:
    #!/usr/bin/env bash
    set -euo pipefail
    bad=$(cargo tree -p ledger-core -e normal --prefix none | grep -oE '^(diesel|actix-web|actix-rt|tokio|fantoccini|reqwest|hyper|r2d2|libsqlite3-sys|pq-sys) ' | sort -u || true)
    if [ -n "$bad" ]; then echo "ledger-core depends on I/O crates: $bad"; exit 1; fi
    echo "ledger-core is pure"

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

# Benchmarks (release builds): ledger store, capture pool, HTTP API. Figures go to docs/PERFORMANCE.md.
bench: setup
    cargo run --release -p ledger-store --features test-support --example ledger_bench 4000
    cargo run --release -p capture --example capture_bench 40
    bash scripts/bench-api.sh
