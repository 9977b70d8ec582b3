#!/usr/bin/env python3
"""Peak memory of `GET /admin/v1/verify` on one SQLite account with a long history
(issue 11: verify's memory must not grow with an account's history). A measurement, not
a test: it prints the figures and fails only when verify is not clean.

    python3 scripts/bench/verify_memory.py [--bin target/debug/api-server] [--entries 200000]

It starts the server on a scratch SQLite file, makes one account through the admin API
with one credit, one hold captured (a `usage` entry naming its hold) and one debit, stops
the server, and copies that captured hold and its entry in SQL until the account has
`--entries` entries (each copy a new hold and entry, the running balance, the grant's
remaining and the account row kept exact, so verify is clean). Then it starts the server
again and reads its resident set (VmRSS) idle, calls verify once, and reads the peak
(VmHWM, the largest resident set the process ever had).
"""

import argparse
import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

TOKEN = "verify-memory-admin-token-0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


class Server:
    def __init__(self, binary, work, db):
        self.port = free_port()
        config = os.path.join(work, "server.toml")
        with open(config, "w") as f:
            f.write(f"""[server]
bind = "127.0.0.1:{self.port}"
[database]
url = "sqlite://{db}"
[admin]
token = "{TOKEN}"
[credits]
signup_bonus = 0
[capture]
pool_size = 1
[screenshots]
cache_dir = "{work}/cache"
""")
        self.log = open(os.path.join(work, "server.log"), "w")
        # No rate limits: the bench measures the ledger.
        env = dict(os.environ, RUST_LOG="warn", SHOTLEDGER__RATELIMIT__PER_KEY_RPS="0",
                   SHOTLEDGER__RATELIMIT__PER_IP_RPS="0",
                   SHOTLEDGER__RATELIMIT__CAPTURES_PER_ACCOUNT="0")
        self.proc = subprocess.Popen([binary, "--config", config], stderr=self.log, env=env)
        for _ in range(300):
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        sys.exit("verify_memory: the server did not become healthy; see " + self.log.name)

    def call(self, method, path, body=None, key=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        r = conn.getresponse()
        answer = r.read()
        conn.close()
        return r.status, (json.loads(answer) if answer else None)

    def ok(self, method, path, body=None, key=None):
        status, answer = self.call(method, path, body, key)
        if status not in (200, 201):
            self.stop()
            sys.exit(f"verify_memory: {method} {path}: {status} {answer}")
        return answer

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def seed(server, entries):
    account = server.ok("POST", "/admin/v1/accounts", {"email": "verify@bench.example.com"})
    a = account["accountId"]
    server.ok("POST", f"/admin/v1/accounts/{a}/credits",
              {"amount": entries + 10, "description": "Seed"}, key="seed-credit")
    hold = server.ok("POST", f"/admin/v1/accounts/{a}/holds",
                     {"amount": 1, "description": "Render"}, key="seed-hold")
    server.ok("POST", f"/admin/v1/holds/{hold['holdId']}/capture", {})
    server.ok("POST", f"/admin/v1/accounts/{a}/debits",
              {"amount": 1, "description": "Screenshot"}, key="seed-debit")
    return a, hold["holdId"]


def fill(db, account, hold_id, entries):
    """Copies the captured hold and its usage entry until the account has `entries`."""
    conn = sqlite3.connect(db)
    (last_seq,) = conn.execute("SELECT last_seq FROM accounts WHERE id = ?", (account,)).fetchone()
    copies = entries - last_seq
    if copies <= 0:
        return
    (usage_id, amount) = conn.execute(
        "SELECT id, amount FROM entries WHERE hold_id = ?", (hold_id,)).fetchone()
    (grant_id,) = conn.execute(
        "SELECT id FROM grants WHERE account_id = ? AND remaining > 0", (account,)).fetchone()
    (balance,) = conn.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()
    hold_cols = [r[1] for r in conn.execute("PRAGMA table_info(holds)")]
    entry_cols = [r[1] for r in conn.execute("PRAGMA table_info(entries)")]
    with conn:
        conn.execute("CREATE TEMP TABLE n (i INTEGER PRIMARY KEY)")
        conn.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                     "INSERT INTO n SELECT i FROM c", (copies,))
        hold_sel = [("printf('hold_fill%08d', i)" if c == "id" else c) for c in hold_cols]
        conn.execute(f"INSERT INTO holds ({', '.join(hold_cols)}) "
                     f"SELECT {', '.join(hold_sel)} FROM holds, n WHERE id = ?", (hold_id,))
        over = {
            "id": "printf('ent_fill%08d', i)",
            "seq": "? + i",
            "balance_after": "? + ? * i",
            "hold_id": "printf('hold_fill%08d', i)",
        }
        entry_sel = [over.get(c, c) for c in entry_cols]
        conn.execute(f"INSERT INTO entries ({', '.join(entry_cols)}) "
                     f"SELECT {', '.join(entry_sel)} FROM entries, n WHERE id = ?",
                     (last_seq, balance, amount, usage_id))
        conn.execute("UPDATE grants SET remaining = remaining + ? WHERE id = ?",
                     (amount * copies, grant_id))
        conn.execute("UPDATE accounts SET balance = balance + ?, last_seq = last_seq + ? WHERE id = ?",
                     (amount * copies, copies, account))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default="target/debug/api-server")
    p.add_argument("--entries", type=int, default=200_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        db = os.path.join(work, "verify.db")
        server = Server(args.bin, work, db)
        account, hold_id = seed(server, args.entries)
        server.stop()
        t0 = time.monotonic()
        fill(db, account, hold_id, args.entries)
        filled = time.monotonic() - t0
        server = Server(args.bin, work, db)
        pid = server.proc.pid
        idle = status_kib(pid, "VmRSS")
        peak_before = status_kib(pid, "VmHWM")
        t0 = time.monotonic()
        report = server.ok("GET", "/admin/v1/verify")
        took = time.monotonic() - t0
        peak = status_kib(pid, "VmHWM")
        server.stop()
    print(f"verify_memory: {args.bin}: {report['entries']} entries on {report['accounts']} account(s) "
          f"(filled in {filled:.1f} s); verify ok={report['ok']} in {took:.2f} s; "
          f"server RSS idle {idle / 1024:.0f} MiB (peak before verify {peak_before / 1024:.0f} MiB), "
          f"peak after verify (VmHWM) {peak / 1024:.0f} MiB")
    if not report["ok"] or report["entries"] != args.entries:
        sys.exit(f"verify_memory: verify is not clean: {report['violations'][:5]}")


if __name__ == "__main__":
    main()
