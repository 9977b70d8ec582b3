#!/usr/bin/env bash
# Load test of the api-server (a benchmark, not a test): `GET /api/v1/credits` with an API
# key, and `POST /admin/v1/accounts/{id}/debits`, with wrk, on SQLite then PostgreSQL.
# Records requests/s, p50, p99 and the server's peak RSS (VmHWM) in target/bench/api.md.
#
#   scripts/bench-api.sh                 # both backends, 10 s per load, 2 threads, 32 connections
#   DURATION=5s CONNECTIONS=64 scripts/bench-api.sh
#   BACKENDS=sqlite scripts/bench-api.sh
#   PG_URL=postgres://postgres@127.0.0.1:5432 scripts/bench-api.sh   # server for the fresh database
#
# Needs wrk, curl, jq; PostgreSQL's createdb/dropdb for the PostgreSQL run.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
BACKENDS=${BACKENDS:-sqlite postgres}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_DB=${PG_DB:-shotledger_bench}
# The report is written here and printed; copy its table into docs/PERFORMANCE.md ("HTTP API").
OUT=${OUT:-target/bench/api.md}
TOKEN=bench-admin-token-0123456789

for tool in wrk curl jq; do
    command -v "$tool" >/dev/null || { echo "bench-api: $tool is not installed" >&2; exit 1; }
done

cargo build --release -p api-server >&2
BIN=target/release/api-server
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
scratch_and_stop_on_exit

# wrk's --latency output → "rps p50 p99" (latencies in ms).
summarise() {
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        END { printf "%d %.2f %.2f %d\n", rps, p50, p99, non2xx + 0 }
    ' "$1"
}

cat >"$work/debit.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"amount":1,"description":"bench debit"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
EOF

ROWS=()
LOADS=()
for backend in $BACKENDS; do
    LOADS+=("$backend $(cut -d' ' -f1-3 /proc/loadavg)")
    port=$(free_port)
    base="http://127.0.0.1:$port"
    case $backend in
        sqlite) url="sqlite://$work/bench.db" ;;
        postgres)
            dropdb --if-exists -h 127.0.0.1 -U postgres "$PG_DB" 2>/dev/null || true
            createdb -h 127.0.0.1 -U postgres "$PG_DB"
            url="$PG_URL/$PG_DB"
            ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    cat >"$work/$backend.toml" <<EOF
[server]
bind = "127.0.0.1:$port"
[database]
url = "$url"
[admin]
token = "$TOKEN"
[capture]
# Screenshots are not measured here: point capture at a closed port so no browser starts.
webdriver_url = "http://127.0.0.1:9"
EOF
    RUST_LOG=warn "$BIN" --config "$work/$backend.toml" 2>"$work/$backend.log" &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "$base/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "$base/healthz" >/dev/null

    # One account with a key and a billion credits.
    id=$(curl -fsS -c "$work/jar" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench password"}' \
        "$base/api/v1/auth/signup" | jq -r .accountId)
    key=$(curl -fsS -b "$work/jar" -H 'content-type: application/json' -d '{"name":"bench"}' \
        "$base/api/v1/api-keys" | jq -r .key)
    curl -fsS -o /dev/null -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d '{"amount":1000000000,"description":"bench credits"}' "$base/admin/v1/accounts/$id/credits"

    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "x-api-key: $key" \
        "$base/api/v1/credits" >"$work/$backend-balance.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/debit.lua" \
        "$base/admin/v1/accounts/$id/debits" >"$work/$backend-debit.txt"

    hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
    balance=$(curl -fsS -H "x-api-key: $key" "$base/api/v1/credits" | jq -r .balance)
    verify=$(curl -fsS -H "authorization: Bearer $TOKEN" "$base/admin/v1/verify" | jq -c '{ok, entries}')
    kill -TERM "$server_pid"
    wait "$server_pid"
    server_pid=
    for load in balance debit; do
        read -r rps p50 p99 non2xx < <(summarise "$work/$backend-$load.txt")
        case $load in
            balance) what='`GET /api/v1/credits` (x-api-key)' ;;
            debit) what='`POST /admin/v1/accounts/{id}/debits` (1 credit)' ;;
        esac
        ROWS+=("| $backend | $what | $rps | $p50 | $p99 | $non2xx | $((hwm_kb / 1024)) |")
    done
    echo "$backend: balance after the debits $balance; verify $verify" >&2
    if [ "$backend" = postgres ]; then
        dropdb --if-exists -h 127.0.0.1 -U postgres "$PG_DB" || true
    fi
done

model=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
mkdir -p "$(dirname "$OUT")"
{
    echo "# api-server under load"
    echo
    echo "Measured $(date -u +%Y-%m-%d) with \`scripts/bench-api.sh\` (wrk, ${THREADS} threads, ${CONNECTIONS} connections, ${DURATION} per load, \`--latency\`)."
    echo
    echo "| backend | load | requests/s | p50 ms | p99 ms | non-2xx | server peak RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "- Machine: $(nproc) cores ($model), $mem RAM; wrk runs on the same machine as the server and the database."
    echo "- Server: release build, \`server.workers = 0\` (one per CPU), \`database.max_connections = 16\`, \`RUST_LOG=warn\`,"
    echo "  \`capture.webdriver_url\` pointed at a closed port (no browser runs; screenshots are measured elsewhere);"
    echo "  SQLite is a file in a temporary folder, PostgreSQL a fresh database (\`createdb $PG_DB\`) on the local server."
    echo "- Load average (1/5/15 min) when each backend started: $(IFS=';'; echo "${LOADS[*]}") — anything else running on the machine shows here."
    echo "- Peak RSS is the server process's VmHWM from \`/proc/<pid>/status\` after both loads of that backend."
    echo "- Each debit is a full ledger transaction (account lock, balance, entry, commit); the balance read"
    echo "  looks up the API key's hash and sums the account's live grants and holds."
    echo
    echo "Reproduce: \`scripts/bench-api.sh\` (\`DURATION=10s THREADS=2 CONNECTIONS=32 BACKENDS=\"sqlite postgres\"\`)."
} >"$OUT"
cat "$OUT"
