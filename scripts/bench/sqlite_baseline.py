#!/usr/bin/env python3
"""Baseline of issue 11 for SQLite: the plainest durable debit, in Python's sqlite3.

A temporary database file in WAL mode with synchronous=FULL (every commit is fsynced). Each
caller is a thread with its own connection; a commit holds one debit, or 64 debits. A debit
is an insert of an entry plus `UPDATE accounts SET balance = balance - 1 WHERE id = ? AND
balance >= 1` on one hot row. Writers take an in-process lock before BEGIN IMMEDIATE (as the
store's SQLite write gate does), so they queue instead of sleeping in SQLite's busy handler.
Prints the figures and appends rows to the results file.

    python3 scripts/bench/sqlite_baseline.py [OUT.tsv]   # THREADS="1 16 64" SECONDS_PER_CELL=3
"""

import os
import sqlite3
import sys
import tempfile
import threading
import time

SECONDS = float(os.environ.get("SECONDS_PER_CELL", "3"))
THREADS = [int(t) for t in os.environ.get("THREADS", "1 16 64").split()]
OUT = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.tsv"


def connect(path):
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


def cell(path, threads, per_commit):
    stop = time.monotonic() + SECONDS
    counts = [0] * threads
    latencies = [[] for _ in range(threads)]
    gate = threading.Lock()

    def caller(i):
        conn = connect(path)
        while time.monotonic() < stop:
            t = time.perf_counter()
            with gate:
                # BEGIN IMMEDIATE takes the write lock up front, as a writer should in WAL mode.
                conn.execute("BEGIN IMMEDIATE")
                for _ in range(per_commit):
                    conn.execute("INSERT INTO entries (account_id, amount) VALUES (1, -1)")
                    conn.execute(
                        "UPDATE accounts SET balance = balance - 1 WHERE id = ? AND balance >= 1",
                        (1,),
                    )
                conn.execute("COMMIT")
            latencies[i].append(time.perf_counter() - t)
            counts[i] += per_commit
        conn.close()

    start = time.monotonic()
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - start
    lat = sorted(x for per in latencies for x in per)

    def pct(p):
        return lat[min(len(lat) - 1, round((len(lat) - 1) * p))] * 1000 if lat else 0.0

    return sum(counts) / elapsed, pct(0.5), pct(0.99)


def main():
    os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, open(OUT, "a") as out:
        for per_commit in (1, 64):
            for threads in THREADS:
                path = os.path.join(tmp, f"b{per_commit}-{threads}.db")
                conn = connect(path)
                conn.executescript(
                    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
                    "CREATE TABLE entries (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL"
                    " REFERENCES accounts (id), amount INTEGER NOT NULL,"
                    " created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);"
                    "INSERT INTO accounts VALUES (1, 1000000000);"
                )
                conn.close()
                rate, p50, p99 = cell(path, threads, per_commit)
                load = f"sqlite-{per_commit}-per-commit"
                # Latency is per commit (of 1 or 64 debits).
                out.write(f"baseline\tsqlite\t{load}\t{threads}\t{rate:.0f}\t{p50:.2f}\t{p99:.2f}\t"
                          f"per commit of {per_commit}\n")
                print(f"sqlite3 {per_commit}/commit, {threads} threads: {rate:.0f} debits/s,"
                      f" p50 {p50:.2f} ms, p99 {p99:.2f} ms (a commit)", file=sys.stderr)


if __name__ == "__main__":
    main()
