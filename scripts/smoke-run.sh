#!/usr/bin/env bash
# Runs `./just run` as the README writes it (on data/shotledger.db of this checkout),
# waits for both programs to answer /healthz, checks a few answers, then sends
# SIGTERM and expects both to stop. Used by CI; handy after changing scripts/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
setsid ./just run >"$log" 2>&1 &
pid=$!
stop() { kill -TERM -- "-$pid" 2>/dev/null || true; }
# However this script ends (a failed check, Ctrl-C, a CI timeout), both programs stop.
trap 'cat "$log" >&2' ERR
trap 'stop' EXIT
trap 'exit 1' INT TERM

wait_up() {
  for _ in $(seq 1 1800); do
    curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "smoke: ./just run exited early" >&2; return 1; }
    sleep 1
  done
  echo "smoke: $1 never became healthy" >&2
  return 1
}
wait_up http://127.0.0.1:8080
wait_up http://127.0.0.1:8081

curl -fsS http://127.0.0.1:8080/api/v1/credits/packs | grep -q pack_starter
# `./just run` opens on the dashboard: it says where, and `/` leads to its login page.
grep -q "Dashboard: http://localhost:8080/" "$log" || { echo "smoke: run.sh did not print the dashboard's address" >&2; exit 1; }
curl -fsS -L http://127.0.0.1:8080/ | grep -q '<button type="submit">Log in</button>' \
  || { echo "smoke: / is not the dashboard's login page" >&2; exit 1; }
email="smoke-$(date +%s%N)@example.com"
curl -fsS -c "$log.jar" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"a long secret\"}" \
  http://127.0.0.1:8080/api/v1/auth/signup >/dev/null
# Demo payments are on under `just run`: a purchase answers a local checkout URL.
curl -fsS -b "$log.jar" -H 'content-type: application/json' -d '{"packId":"pack_starter"}' \
  http://127.0.0.1:8080/api/v1/credits/purchase | grep -q checkoutUrl

stop
for _ in $(seq 1 60); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "smoke: ./just run did not stop within 60 s of SIGTERM" >&2
  cat "$log" >&2
  exit 1
fi
! curl -fsS http://127.0.0.1:8080/healthz >/dev/null 2>&1 || { echo "smoke: api-server still answers" >&2; exit 1; }
! curl -fsS http://127.0.0.1:8081/healthz >/dev/null 2>&1 || { echo "smoke: webhook-receiver still answers" >&2; exit 1; }
grep -qi "demo" "$log" || { echo "smoke: no demo warning in the log" >&2; cat "$log" >&2; exit 1; }
rm -f "$log" "$log.jar"
echo "smoke: ./just run came up, answered, and stopped cleanly"
