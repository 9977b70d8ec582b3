#!/usr/bin/env bash
# The api-server under wrk (a benchmark, not a test; issue 11's `just bench` runs it), on
# SQLite then PostgreSQL, each load at each connection count:
#   hot      POST /admin/v1/accounts/{id}/debits, 1 credit, one account, fresh Idempotency-Key
#   spread   the same over 10,000 accounts (created first through POST /admin/v1/accounts)
#   holds    POST .../holds (2 credits) then /capture (70 %), /capture {"amount":1} (10 %)
#            or /release (20 %) of it (scripts/bench/holds.lua)
#   balance  GET /api/v1/credits with an x-api-key
#   cache    GET /api/v1/screenshot of a local page, already captured (x-cache: HIT)
#   packs    GET /api/v1/credits/packs (no database): the baseline of balance and cache
# p50/p99 from wrk --latency, the server's largest VmRSS sampled during each cell, and
# `GET /admin/v1/verify` at the end of each backend (the script fails if it is not clean).
# Rows go to RESULTS (tab-separated, see scripts/bench/README.md) and are printed.
#
#   scripts/bench-api.sh
#   DURATION=5s CONNECTIONS="1 16 64" BACKENDS="sqlite postgres" SPREAD_ACCOUNTS=10000
#   RESULTS=target/bench/results.tsv PG_URL=postgres://postgres@127.0.0.1:5432
#
# Needs wrk, curl, jq, python3, chromium + chromedriver (for the one capture), and
# PostgreSQL's createdb/dropdb for the PostgreSQL run.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-1 16 64}
BACKENDS=${BACKENDS:-sqlite postgres}
SPREAD_ACCOUNTS=${SPREAD_ACCOUNTS:-10000}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_DB=${PG_DB:-shotledger_bench}
RESULTS=${RESULTS:-target/bench/results.tsv}
LOADS=${LOADS:-hot spread holds balance cache packs}
TOKEN=bench-admin-token-0123456789

for tool in wrk curl jq python3; do
    command -v "$tool" >/dev/null || { echo "bench-api: $tool is not installed" >&2; exit 1; }
done

# API_SERVER_BIN: another build of the server (say, a debug one while trying the script).
if [ -z "${API_SERVER_BIN:-}" ]; then
    cargo build --release -p api-server >&2
fi
BIN=${API_SERVER_BIN:-target/release/api-server}
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
# shellcheck source=scripts/lib/wrk.sh
. scripts/lib/wrk.sh
scratch_and_stop_on_exit
page_pid=""
trap '[ -z "$page_pid" ] || kill "$page_pid" 2>/dev/null || true; _stop_server_and_clean' EXIT
mkdir -p "$(dirname "$RESULTS")"

# The page the one screenshot captures, served locally.
mkdir -p "$work/site"
echo '<!doctype html><title>bench</title><h1>Shotledger bench page</h1>' >"$work/site/page.html"
page_port=$(free_port)
python3 -m http.server "$page_port" --bind 127.0.0.1 --directory "$work/site" >/dev/null 2>&1 &
page_pid=$!
shot_query="url=http%3A%2F%2F127.0.0.1%3A${page_port}%2Fpage.html"

for backend in $BACKENDS; do
    echo "bench-api: $backend, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
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
    cat >"$work/$backend.toml" <<TOML
[server]
bind = "127.0.0.1:$port"
[database]
url = "$url"
[admin]
token = "$TOKEN"
[credits]
# Funds every account the bench creates: no load runs out of credits.
signup_bonus = 1000000000
[capture]
# One browser, for the single capture the cache load serves afterwards.
pool_size = 1
allow_private_targets = true
[screenshots]
cache_dir = "$work/cache-$backend"
TOML
    # No rate limits: the loads measure the ledger, not the limiter refusing them.
    SHOTLEDGER__RATELIMIT__PER_KEY_RPS=0 SHOTLEDGER__RATELIMIT__PER_IP_RPS=0 \
    SHOTLEDGER__RATELIMIT__CAPTURES_PER_ACCOUNT=0 \
    RUST_LOG=warn "$BIN" --config "$work/$backend.toml" 2>"$work/$backend.log" &
    server_pid=$!
    wait_healthy "$base" || { cat "$work/$backend.log" >&2; exit 1; }

    # The hot account, with an API key.
    hot=$(curl -fsS -c "$work/jar" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench password"}' \
        "$base/api/v1/auth/signup" | jq -r .accountId)
    key=$(curl -fsS -b "$work/jar" -H 'content-type: application/json' -d '{"name":"bench"}' \
        "$base/api/v1/api-keys" | jq -r .key)
    echo "$hot" >"$work/hot.txt"
    case " $LOADS " in *" spread "*)
        t0=$(date +%s)
        python3 scripts/bench/make_accounts.py "$base" "$TOKEN" "$SPREAD_ACCOUNTS" >"$work/spread.txt"
        echo "bench-api: $backend: $SPREAD_ACCOUNTS accounts in $(( $(date +%s) - t0 )) s" >&2 ;;
    esac
    case " $LOADS " in *" cache "*)
        # The one capture; every later request for it must be a cache hit.
        curl -fsS -o /dev/null -H "x-api-key: $key" "$base/api/v1/screenshot?$shot_query" ||
            { echo "bench-api: the seeding capture failed" >&2; tail -20 "$work/$backend.log" >&2; exit 1; }
        hit=$(curl -fsS -o /dev/null -D - -H "x-api-key: $key" "$base/api/v1/screenshot?$shot_query" |
            tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" {print $2}')
        [ "$hit" = HIT ] || { echo "bench-api: the second screenshot request was x-cache '$hit', not HIT" >&2; exit 1; } ;;
    esac

    for load in $LOADS; do
        for c in $CONNECTIONS; do
            threads=$(( c < 2 ? c : 2 ))
            prefix="$backend-$load-$c-$$"
            case $load in
                hot) set -- -s scripts/bench/debit.lua "$base" -- "$TOKEN" "$prefix" "$work/hot.txt" ;;
                spread) set -- -s scripts/bench/debit.lua "$base" -- "$TOKEN" "$prefix" "$work/spread.txt" ;;
                holds) set -- -s scripts/bench/holds.lua "$base" -- "$TOKEN" "$prefix" "$hot" ;;
                balance) set -- -H "x-api-key: $key" "$base/api/v1/credits" ;;
                cache) set -- -H "x-api-key: $key" "$base/api/v1/screenshot?$shot_query" ;;
                packs) set -- "$base/api/v1/credits/packs" ;;
                *) echo "unknown load $load" >&2; exit 1 ;;
            esac
            start_rss_sampler "$server_pid" "$work/rss.txt"
            wrk -t"$threads" -c"$c" -d"$DURATION" --latency "$@" >"$work/wrk.txt"
            rss=$(stop_rss_sampler "$work/rss.txt")
            read -r rps p50 p99 non2xx errors < <(wrk_summary "$work/wrk.txt")
            printf 'api\t%s\t%s\t%s\t%s\t%s\t%s\tnon-2xx %s; socket errors %s; rss %s MiB\n' \
                "$backend" "$load" "$c" "$rps" "$p50" "$p99" "$non2xx" "$errors" "$rss" |
                tee -a "$RESULTS" >&2
        done
    done

    verify=$(curl -fsS -H "authorization: Bearer $TOKEN" "$base/admin/v1/verify")
    hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
    ok=$(jq -r .ok <<<"$verify")
    printf 'verify\t%s\tapi\t\t\t\t\tok %s; %s entries; peak RSS (VmHWM) %s MiB\n' "$backend" "$ok" \
        "$(jq -r .entries <<<"$verify")" "$((hwm_kb / 1024))" | tee -a "$RESULTS" >&2
    if [ "$ok" != true ]; then
        echo "bench-api: $backend: verify found violations: $verify" >&2
        exit 1
    fi
    if [ "$backend" = postgres ]; then
        dropdb --if-exists -h 127.0.0.1 -U postgres "$PG_DB" || true
    fi
done
