#!/usr/bin/env bash
# `just run`: the api-server and the webhook-receiver on the embedded SQLite default.
# Extra arguments (e.g. --config FILE) go to both programs. Ctrl-C or SIGTERM stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p api-server -p webhook-receiver
./target/release/webhook-receiver "$@" &
receiver=$!
trap 'kill -TERM $receiver 2>/dev/null; wait $receiver 2>/dev/null || true' EXIT INT TERM
./target/release/api-server "$@"
