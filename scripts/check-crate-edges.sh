#!/usr/bin/env bash
# The crate-edge table: which crates each workspace crate must never depend on (normal
# dependencies, direct or through others; tests and build scripts do not count). Run by
# `just lint`; prints the table, then every violation, and fails when there is one.
#
# Patterns are shell globs over crate names. A rule marked `known:` is a violation not
# removed yet: it is printed as KNOWN and does not fail (none today). Only `startup` (the
# composition root) and the two programs may depend on both `settings` and the libraries
# it configures. The operator CLI (`shotledger`) is the third program: it must never link the
# test helpers, and its clap stays lean (no terminal colours: `anstream`). The libraries that
# keep statistics (ledger-store, capture, payments) never depend on `telemetry` (the
# metrics): they offer hooks or snapshots (ADR 14).
set -euo pipefail
# The patterns are matched with [[ == ]], never expanded against files.
set -f
cd "$(dirname "$0")/.."

# crate          | must not depend on                                      | status
read -r -d '' TABLE <<'RULES' || true
ledger-core      | diesel* actix-* tokio fantoccini reqwest hyper r2d2 libsqlite3-sys pq-sys | enforced
settings         | ledger-store diesel* libsqlite3-sys pq-sys                | enforced
payments         | settings capture actix-* telemetry prometheus-client      | enforced
http-edge        | ledger-* capture payments settings                        | enforced
capture          | ledger-* telemetry prometheus-client                      | enforced
ledger-store     | actix-* capture payments settings telemetry prometheus-client | enforced
telemetry        | ledger-* capture payments settings startup actix-* diesel* | enforced
shotledger       | test-support anstream                                     | enforced
RULES

printf '%-14s %-60s %s\n' "crate" "must not depend on" "status"
printf '%s\n' "$TABLE" | while IFS='|' read -r krate banned status; do
    printf '%-14s %-60s %s\n' "$(echo $krate)" "$(echo $banned)" "$(echo $status)"
done
echo

failed=0
while IFS='|' read -r krate banned status; do
    krate=$(echo $krate)
    status=$(echo $status)
    # Every crate in the normal dependency graph, once.
    deps=$(cargo tree -p "$krate" -e normal --prefix none --format '{p}' --offline 2>/dev/null \
        | awk '{print $1}' | sort -u | grep -vx "$krate" || true)
    if [ -z "$deps" ]; then
        echo "cannot read the dependencies of $krate (cargo tree failed)"
        failed=1
        continue
    fi
    for pattern in $banned; do
        for dep in $deps; do
            # shellcheck disable=SC2053
            if [[ $dep == $pattern ]]; then
                if [[ $status == known:* ]]; then
                    echo "KNOWN      $krate -> $dep (${status#known: })"
                else
                    echo "VIOLATION  $krate -> $dep (forbidden: $pattern)"
                    failed=1
                fi
            fi
        done
    done
done <<< "$TABLE"

if [ "$failed" -ne 0 ]; then
    echo "crate edges: violations above"
    exit 1
fi
echo "crate edges: every enforced rule holds"
