#!/usr/bin/env bash
# `just run`: the api-server and the webhook-receiver on the embedded SQLite default
# (data/shotledger.db), with config/run.toml (demo payments). `just run --config FILE`
# uses FILE instead. Ctrl-C or SIGTERM stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
cargo build --release -p api-server -p webhook-receiver

args=("$@")
case " ${args[*]-} " in
  *" --config "* | *" --config="*) ;;
  *) args=(--config config/run.toml "${args[@]}") ;;
esac

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "run: chromium or chromedriver is missing: the ledger API runs, screenshots answer 503." >&2
  echo "run: to turn screenshots on, run \`./just setup\` (or apt-get install chromium chromium-driver) and start again." >&2
fi

echo "Dashboard: http://localhost:8080/"
./target/release/webhook-receiver "${args[@]}" &
receiver=$!
trap 'kill -TERM $receiver 2>/dev/null; wait $receiver 2>/dev/null || true' EXIT INT TERM
./target/release/api-server "${args[@]}"
