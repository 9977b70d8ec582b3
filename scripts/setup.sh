#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks, and starts the local PostgreSQL if it is
# installed but stopped. Safe to run again: it only acts on what is missing.
#   scripts/setup.sh build   what building needs (libpq's headers for the PostgreSQL driver)
#   scripts/setup.sh         that, plus what the tests need (chromium, chromedriver, wrk,
#                            the PostgreSQL client) and a running PostgreSQL
# Debian packages need root, or sudo (CI and these machines run as root).
set -euo pipefail
what="${1:-all}"

need_apt=()
[ -e /usr/include/postgresql/libpq-fe.h ] || need_apt+=(libpq-dev)
if [ "$what" != build ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  command -v pg_isready >/dev/null 2>&1 || need_apt+=(postgresql-client)
  command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: please install ${need_apt[*]} (no apt-get on this machine)" >&2
    exit 1
  fi
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ "$what" = build ] && exit 0

# PostgreSQL for the tests: the machine's server, started if it is stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
fi
exit 0
