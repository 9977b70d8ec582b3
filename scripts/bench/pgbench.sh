#!/usr/bin/env bash
# Baseline of issue 11 for PostgreSQL: the plainest debit, measured with pgbench on the same
# server the ledger uses. One transaction = insert an entry + a guarded balance update:
#
#   INSERT INTO entries (account_id, amount) VALUES (:id, -1);
#   UPDATE accounts SET balance = balance - 1 WHERE id = :id AND balance >= 1;
#
# on one hot row and on rows picked at random among 1,000, at each client count. It runs in
# a scratch database of its own (created here, dropped on exit).
#
#   scripts/bench/pgbench.sh [OUT.tsv]     # appends result rows (see scripts/bench/README.md)
#   CLIENTS="1 16 64" SECONDS_PER_CELL=5 PG_URL=postgres://postgres@127.0.0.1:5432
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench/results.tsv}
CLIENTS=${CLIENTS:-1 16 64}
SECONDS_PER_CELL=${SECONDS_PER_CELL:-5}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
DB=shotledger_pgbench_$$
export PGOPTIONS="-c client_min_messages=warning"

pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1 || true)
[ -x "$pgbench" ] || { echo "pgbench: not found (scripts/setup.sh installs it)" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
    psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
psql "$PG_URL/postgres" -qAtc "CREATE DATABASE $DB" >/dev/null

cat >"$work/debit.sql" <<'SQL'
\set id random(1, :rows)
BEGIN;
INSERT INTO entries (account_id, amount) VALUES (:id, -1);
UPDATE accounts SET balance = balance - 1 WHERE id = :id AND balance >= 1;
COMMIT;
SQL

mkdir -p "$(dirname "$OUT")"
for rows in 1 1000; do
    case $rows in 1) load=hot ;; *) load=spread1000 ;; esac
    for c in $CLIENTS; do
        # A fresh table per cell, so every cell starts from the same state.
        psql "$PG_URL/$DB" -qAt >/dev/null <<SQL
DROP TABLE IF EXISTS entries; DROP TABLE IF EXISTS accounts;
CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE entries (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id),
                      amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO accounts SELECT g, 1000000000 FROM generate_series(1, $rows) g;
VACUUM ANALYZE accounts;
SQL
        threads=$(( c < $(nproc) ? c : $(nproc) ))
        "$pgbench" -n -M prepared -c "$c" -j "$threads" -T "$SECONDS_PER_CELL" -D rows="$rows" \
            -f "$work/debit.sql" -r "$PG_URL/$DB" >"$work/out.txt" 2>&1 ||
            { cat "$work/out.txt" >&2; exit 1; }
        tps=$(awk '/^tps = / {print $3; exit}' "$work/out.txt")
        avg=$(awk '/^latency average/ {print $4; exit}' "$work/out.txt")
        printf 'baseline\tpostgres\tpgbench-%s\t%s\t%.0f\t\t\tavg %s ms\n' "$load" "$c" "$tps" "$avg" >>"$OUT"
        echo "pgbench $load, $c clients: $tps tx/s (average $avg ms)" >&2
    done
done
