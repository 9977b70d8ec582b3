#!/usr/bin/env bash
# Installs what a fresh machine lacks for building and testing Shotledger, and starts the
# local PostgreSQL if it is installed but stopped. Safe to run again: it only acts on
# what is missing. Debian packages need root (CI and these machines run as root).
set -euo pipefail

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
[ -e /usr/include/postgresql/libpq-fe.h ] || need_apt+=(libpq-dev)
command -v pg_isready >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PostgreSQL for the store's tests: the machine's server, started if it is stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
fi
exit 0
