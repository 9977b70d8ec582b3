#!/usr/bin/env python3
"""Turns the rows of one `just bench` run (results.tsv) into target/bench/summary.md: each
figure next to its baseline from the same run, the ratio, and issue 11's targets met or
missed. docs/PERFORMANCE.md copies its tables as they are.

    python3 scripts/bench/summary.py [RESULTS.tsv] [SUMMARY.md] [--doc=docs/PERFORMANCE.md]

Rows (tab-separated): layer, backend, load, callers, ops/s, p50 ms, p99 ms, note; where
layer is `store` (ledger_bench), `api` (bench-api.sh), `baseline` (pgbench.sh,
sqlite_baseline.py), `verify`, or `meta` (backend = key, load = value).
"""

import re
import sys
from collections import defaultdict

ARGS = [a for a in sys.argv[1:] if not a.startswith("--doc=")]
RESULTS = ARGS[0] if ARGS else "target/bench/results.tsv"
SUMMARY = ARGS[1] if len(ARGS) > 1 else "target/bench/summary.md"
# --doc=docs/PERFORMANCE.md: also replace the marked blocks of that file with this run's.
DOC = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--doc=")), None)

rows, meta, verify = [], defaultdict(list), []
with open(RESULTS) as f:
    for line in f:
        cols = line.rstrip("\n").split("\t")
        if cols[0] == "meta":
            meta[cols[1]].append(cols[2])
            continue
        cols += [""] * (8 - len(cols))
        layer, backend, load, callers, rate, p50, p99, note = cols[:8]
        if layer == "verify":
            verify.append((backend, load, note))
            continue
        rows.append(dict(layer=layer, backend=backend, load=load, callers=int(callers),
                         rate=float(rate) if rate else None,
                         p50=float(p50) if p50 else None, p99=float(p99) if p99 else None,
                         note=note))


def find(layer, backend, load, callers):
    for r in rows:
        if (r["layer"], r["backend"], r["load"], r["callers"]) == (layer, backend, load, callers):
            return r
    return None


def baselines(r):
    """[(label, row)] of the baselines a row is compared with."""
    b, load, c = r["backend"], r["load"], r["callers"]
    if r["layer"] in ("store", "api") and load in ("hot", "spread", "holds"):
        if b == "postgres":
            name = "pgbench-spread1000" if load == "spread" else "pgbench-hot"
            return [(name, find("baseline", "postgres", name, c))]
        return [("sqlite 1/commit", find("baseline", "sqlite", "sqlite-1-per-commit", c)),
                ("sqlite 64/commit", find("baseline", "sqlite", "sqlite-64-per-commit", c))]
    if r["layer"] == "api" and load in ("balance", "cache"):
        return [("packs", find("api", b, "packs", c))]
    return []


def num(x):
    return "" if x is None else f"{x:,.0f}"


def ms(x):
    return "" if x is None else f"{x:.2f}"


def rss_of(r):
    m = re.search(r"rss (\d+) MiB", r["note"])
    return int(m.group(1)) if m else None


LOAD_NAMES = {
    "hot": "debit, 1 hot account",
    "spread": "debit, 10,000 accounts",
    "holds": "hold + capture/release mix",
    "balance": "`GET /api/v1/credits` (API key)",
    "cache": "`GET /api/v1/screenshot`, cache hit",
    "packs": "`GET /api/v1/credits/packs`",
}


def cells_table(layer):
    out = ["| backend | load | callers | ops/s | p50 ms | p99 ms | baseline (same run) | ratio |"
           + (" RSS MiB | errors |" if layer == "api" else " errors |"),
           "|---|---|---:|---:|---:|---:|---|---:|" + ("---:|---:|" if layer == "api" else "---:|")]
    for r in rows:
        if r["layer"] != layer:
            continue
        base, ratio = [], []
        for label, b in baselines(r):
            if b and b["rate"]:
                base.append(f"{label} {num(b['rate'])}/s")
                ratio.append(f"{r['rate'] / b['rate']:.2f}")
        errs = ", ".join(p for p in r["note"].split("; ") if not p.startswith("rss"))
        errs = re.sub(r"(non-2xx|socket errors|errors) ", "", errs).replace(", ", "/")
        line = (f"| {r['backend']} | {LOAD_NAMES.get(r['load'], r['load'])} | {r['callers']} | "
                f"{num(r['rate'])} | {ms(r['p50'])} | {ms(r['p99'])} | {'; '.join(base)} | "
                f"{' / '.join(ratio)} |")
        line += f" {rss_of(r) or ''} | {errs} |" if layer == "api" else f" {errs} |"
        out.append(line)
    return out


def baseline_table():
    out = ["| baseline | callers | ops/s | p50 ms | p99 ms | note |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["layer"] == "baseline":
            out.append(f"| {r['backend']}: {r['load']} | {r['callers']} | {num(r['rate'])} | "
                       f"{ms(r['p50'])} | {ms(r['p99'])} | {r['note']} |")
    return out


def targets():
    out = ["| target (64 callers) | measured | needed | |", "|---|---|---|---|"]

    def verdict(value, need, higher=True):
        if value is None:
            return "not measured"
        ok = value >= need if higher else value <= need
        if ok:
            return "**met**"
        if higher:
            return f"**missed**: {value / need:.0%} of it ({need / value:.1f}x short)" if value else "**missed**"
        return f"**missed**: {value / need:.1f}x over"

    def ratio(layer, backend, load, base_layer, base_backend, base_load):
        a, b = find(layer, backend, load, 64), find(base_layer, base_backend, base_load, 64)
        if a and b and a["rate"] and b["rate"]:
            return a["rate"] / b["rate"], f"{num(a['rate'])}/s against {num(b['rate'])}/s"
        return None, "not measured"

    for text, args, need in [
        ("PostgreSQL, hot account, store ≥ 10x pgbench hot row",
         ("store", "postgres", "hot", "baseline", "postgres", "pgbench-hot"), 10),
        ("PostgreSQL, hot account, HTTP ≥ 4x pgbench hot row",
         ("api", "postgres", "hot", "baseline", "postgres", "pgbench-hot"), 4),
        ("SQLite, hot account, store ≥ 15x one-debit-per-commit",
         ("store", "sqlite", "hot", "baseline", "sqlite", "sqlite-1-per-commit"), 15),
        ("`GET /api/v1/credits` ≥ 0.5x `/packs`, SQLite",
         ("api", "sqlite", "balance", "api", "sqlite", "packs"), 0.5),
        ("`GET /api/v1/credits` ≥ 0.5x `/packs`, PostgreSQL",
         ("api", "postgres", "balance", "api", "postgres", "packs"), 0.5),
        ("cache hit ≥ 0.3x `/packs`, SQLite", ("api", "sqlite", "cache", "api", "sqlite", "packs"), 0.3),
        ("cache hit ≥ 0.3x `/packs`, PostgreSQL",
         ("api", "postgres", "cache", "api", "postgres", "packs"), 0.3),
    ]:
        value, shown = ratio(*args)
        out.append(f"| {text} | {'' if value is None else f'{value:.2f}x'} ({shown}) | {need}x | "
                   f"{verdict(value, need)} |")
    for text, layer, backend, need in [
        ("SQLite, hot account, store ≥ 100,000 durable debits/s", "store", "sqlite", 100_000),
        ("SQLite, hot account, HTTP ≥ 20,000 metered debits/s", "api", "sqlite", 20_000),
    ]:
        r = find(layer, backend, "hot", 64)
        value = r["rate"] if r else None
        out.append(f"| {text} | {num(value)}/s | {need:,}/s | {verdict(value, need)} |")
    for backend, need in [("sqlite", 5), ("postgres", 10)]:
        for load in ("hot", "spread"):
            r = find("store", backend, load, 64)
            value = r["p99"] if r else None
            out.append(f"| store p99 of a debit ({LOAD_NAMES[load]}), {backend} ≤ {need} ms | "
                       f"{ms(value)} ms | {need} ms | {verdict(value, need, higher=False)} |")
    for backend in ("sqlite", "postgres"):
        values = [rss_of(r) for r in rows if r["layer"] == "api" and r["backend"] == backend]
        # The process's own peak (VmHWM) too: it also covers setup and the seeding capture.
        values += [int(m.group(1)) for b, layer, note in verify
                   if b == backend and layer == "api"
                   for m in [re.search(r"VmHWM\) (\d+) MiB", note)] if m]
        values = [v for v in values if v is not None]
        value = max(values) if values else None
        # 100 MB = 95.4 MiB.
        mb = None if value is None else value * 1.048576
        out.append(f"| api-server RSS (largest sample, or VmHWM), {backend} ≤ 100 MB | "
                   f"{'' if mb is None else f'{mb:.0f} MB ({value} MiB)'} | 100 MB | "
                   f"{verdict(mb, 100, higher=False)} |")
    return out


def parts():
    """The summary's blocks by name; docs/PERFORMANCE.md carries each between
    `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`."""
    loads = [float(x.split()[0]) for x in meta.get("loadavg", []) if x]
    run = []
    for key, label in [("date", "Run"), ("commit", "Commit"), ("machine", "Machine"),
                       ("postgres", "PostgreSQL"), ("settings", "Settings"), ("command", "Command"),
                       ("duration", "Took")]:
        if meta.get(key):
            run.append(f"- {label}: {'; '.join(meta[key])}")
    if loads:
        run.append(f"- Load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}"
                   f" ({len(loads)} samples, one every 10 s)")
    store = ["Latency per `apply` call; ops/s counts `apply` calls (the hold mix: a hold and its"
             " settlement are two). SQLite is compared with both Python sqlite3 baselines"
             " (1 / 64 debits a commit), PostgreSQL with pgbench (the hot row; 1,000 rows for"
             " the spread load).", ""] + cells_table("store")
    api = ["Requests/s and wrk's latency distribution; RSS is the api-server's largest VmRSS"
           " sampled every 0.2 s during the cell; errors are non-2xx / socket errors. Debits,"
           " holds and captures go through the admin API, the baselines as for the store.", ""]
    api += cells_table("api")
    checks = [f"- {layer}, {backend}: {note}" for backend, layer, note in verify] or ["- not run"]
    return {
        "run": run,
        "targets": targets(),
        "store": store,
        "api": api,
        "baselines": baseline_table(),
        "verify": checks,
    }


def update_doc(path, blocks):
    text = open(path).read()
    for name, lines in blocks.items():
        begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = head + begin + "\n" + "\n".join(lines) + "\n" + end + tail
    open(path, "w").write(text)


def main():
    blocks = parts()
    lines = ["# `just bench` summary", ""] + blocks["run"]
    for title, name in [("Targets of issue 11", "targets"),
                        ("Ledger store, in-process callers (`ledger_bench`)", "store"),
                        ("HTTP API under wrk (`scripts/bench-api.sh`)", "api"),
                        ("Baselines (same run)", "baselines"), ("verify", "verify")]:
        lines += ["", f"## {title}", ""] + blocks[name]
    text = "\n".join(lines) + "\n"
    with open(SUMMARY, "w") as f:
        f.write(text)
    print(text)
    if DOC:
        update_doc(DOC, blocks)
        print(f"(tables copied into {DOC})", file=sys.stderr)


if __name__ == "__main__":
    main()
