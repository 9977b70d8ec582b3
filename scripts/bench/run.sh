#!/usr/bin/env bash
# Issue 11's benchmark in one run: the baselines, the store driven by in-process callers,
# the HTTP API under wrk, on SQLite and PostgreSQL; then one summary, each figure next to
# its baseline of this same run (target/bench/summary.md, printed at the end).
#
#   scripts/bench/run.sh            # 1, 16 and 64 callers; 3 s a store cell, 5 s an HTTP cell
#   scripts/bench/run.sh --quick    # 1 and 64 callers, 1 s / 2 s a cell (also BENCH_QUICK=1)
# Release builds. Rows of the run: target/bench/results.tsv (see scripts/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "${1:-}" = --quick ] && export BENCH_QUICK=1
if [ -n "${BENCH_QUICK:-}" ] && [ "${BENCH_QUICK}" != 0 ]; then
    callers="1 64"; store_args=(--quick); api_duration=2s; base_seconds=2
else
    callers="1 16 64"; store_args=(); api_duration=5s; base_seconds=5
fi
OUT=target/bench
RESULTS=$OUT/results.tsv
mkdir -p "$OUT"
: >"$RESULTS"
started=$(date +%s)

# Builds first, so their CPU stays out of the measurements.
cargo build --release -p ledger-store --features test-support --example ledger_bench >&2
cargo build --release -p api-server >&2

meta() { printf 'meta\t%s\t%s\n' "$1" "$2" >>"$RESULTS"; }
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
meta machine "$(nproc) CPUs ($(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM; every client on the same machine as the server and the database"
meta postgres "$(psql -h 127.0.0.1 -U postgres -Atc "SELECT split_part(version(), ' ', 2) || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', ssl=' || current_setting('ssl')" 2>/dev/null || echo unknown)"
meta settings "callers $callers; store cells $( [ ${#store_args[@]} -gt 0 ] && echo 1 || echo 3) s, HTTP cells $api_duration (wrk, 2 threads or fewer, --latency), baseline cells ${base_seconds} s; release builds; api-server defaults (workers = one per CPU, database.max_connections = 16) with RUST_LOG=warn and the rate limits off (SHOTLEDGER__RATELIMIT__*=0); store: PoolOptions::default() (16 connections)"
meta command "$([ -n "${BENCH_QUICK:-}" ] && echo 'just bench --quick' || echo 'just bench')"

# The load average every 10 s, for the summary.
( while :; do meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"; sleep 10; done ) &
loadavg_pid=$!
trap 'kill "$loadavg_pid" 2>/dev/null || true' EXIT

echo "== baselines: pgbench" >&2
CLIENTS="$callers" SECONDS_PER_CELL=$base_seconds bash scripts/bench/pgbench.sh "$RESULTS"
echo "== baselines: Python sqlite3" >&2
THREADS="$callers" SECONDS_PER_CELL=$base_seconds python3 scripts/bench/sqlite_baseline.py "$RESULTS"
echo "== store: ledger_bench" >&2
target/release/examples/ledger_bench "${store_args[@]}" --out "$RESULTS"
echo "== HTTP API: bench-api.sh" >&2
CONNECTIONS="$callers" DURATION=$api_duration RESULTS="$RESULTS" bash scripts/bench-api.sh

kill "$loadavg_pid" 2>/dev/null || true
meta duration "$(( $(date +%s) - started )) s (builds included)"
python3 scripts/bench/summary.py "$RESULTS" "$OUT/summary.md"
