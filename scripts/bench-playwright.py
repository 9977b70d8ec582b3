#!/usr/bin/env python3
"""Playwright baseline for the capture benchmark (issue 12).

Drives the machine's own Chromium (/usr/bin/chromium's binary) with Playwright's Python
package, never a browser Playwright downloads: it is launched with `executable_path`. Serves
the same 4 KB page as crates/capture/examples/capture_bench.rs, takes 1280x800 PNG
screenshots of it, and prints one JSON object:

  {"sequential": {"p50_ms", "p95_ms", "shots_per_s", "n"},
   "parallel2":  {... two pages of one browser, each in a closed loop},
   "pss_mib": total PSS of the browser's processes after the runs,
   "playwright": version, "chromium": path}

Usage: scripts/bench-playwright.py [--requests N] [--install-only]

The package is installed into its own virtual environment, .tools/playwright-venv, with pip
(the ordinary client and index); if pip cannot install it, the script says so and exits 3,
and the caller reports that no baseline was measured (it never invents one).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".tools" / "playwright-venv"
PLAYWRIGHT_VERSION = "1.63.0"
# Debian's /usr/bin/chromium is a wrapper script; the capture crate launches the binary
# behind it (see capture::config::default_chromium), so the baseline does too.
CHROMIUM_CANDIDATES = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]

PAGE_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>Bench</title>
<style>body{font-family:sans-serif;margin:0;background:#f4f6fb}header{background:#234;color:#fff;padding:24px}
main{display:grid;grid-template-columns:repeat(3,1fr);gap:16px;padding:24px}
.card{background:#fff;border-radius:8px;padding:16px;box-shadow:0 1px 4px rgba(0,0,0,.2)}</style></head>
<body><header><h1>Shotledger benchmark page</h1><p>A small, static, realistic page.</p></header><main>
"""
CARD = ('<div class="card"><h2>Card {i}</h2><p>Lorem ipsum dolor sit amet, consectetur '
        'adipiscing elit, sed do eiusmod tempor.</p></div>')
PAGE = (PAGE_HEAD + "".join(CARD.format(i=i) for i in range(24)) + "</main></body></html>").encode()


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_playwright() -> None:
    """Re-run this script inside the virtual environment, installing Playwright first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = venv_python()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    have = subprocess.run([str(py), "-c", "import playwright"], capture_output=True)
    if have.returncode != 0:
        # Only the Python package (it carries its own driver); never `playwright install`.
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", f"playwright=={PLAYWRIGHT_VERSION}"],
        )
        if r.returncode != 0:
            print("bench-playwright: pip could not install playwright; no baseline measured",
                  file=sys.stderr)
            sys.exit(3)
    os.execv(str(py), [str(py), __file__, *sys.argv[1:]])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


def serve() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/"


def percentile(sorted_ms, p):
    return sorted_ms[round((len(sorted_ms) - 1) * p)]


def summary(lat_ms, wall_s):
    lat_ms = sorted(lat_ms)
    return {
        "n": len(lat_ms),
        "p50_ms": round(percentile(lat_ms, 0.50), 1),
        "p95_ms": round(percentile(lat_ms, 0.95), 1),
        "mean_ms": round(statistics.mean(lat_ms), 1),
        "shots_per_s": round(len(lat_ms) / wall_s, 2),
    }


def descendants(pid: int):
    """pid and every process below it (from /proc/*/stat parent ids)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def pss_mib(root_pid: int) -> float:
    """Sum of Pss over the browser's processes (/proc/PID/smaps_rollup), in MiB."""
    total_kib = 0
    for p in descendants(root_pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            if b"chromium" not in cmd:
                continue
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return round(total_kib / 1024, 1)


def browser_pid(driver_pid: int):
    """The top chromium process launched by Playwright's driver."""
    for p in descendants(driver_pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and b"chromium" in cmd[0] and not any(a.startswith(b"--type=") for a in cmd):
            return p
    return None


RETRIES = {"count": 0}


async def shoot(page, url):
    """One capture: goto + png screenshot. Chromium sometimes answers "Unable to capture
    screenshot" for a page of two; that attempt is retried (its time stays in the figure)
    and counted in the output."""
    for attempt in range(3):
        await page.goto(url)
        try:
            return await page.screenshot(type="png")
        except Exception:  # noqa: BLE001 (Playwright raises its own Error)
            if attempt == 2:
                raise
            RETRIES["count"] += 1
    raise AssertionError("unreachable")


async def closed_loop(pages, url, requests):
    """Each page sends its next shot when its last one is done, until `requests` are done."""
    lat = []
    counter = {"next": 0}

    async def client(page):
        while counter["next"] < requests:
            counter["next"] += 1
            t = time.perf_counter()
            shot = await shoot(page, url)
            lat.append((time.perf_counter() - t) * 1000)
            assert len(shot) > 1000

    started = time.perf_counter()
    await asyncio.gather(*(client(p) for p in pages))
    return summary(lat, time.perf_counter() - started)


async def run(requests: int) -> dict:
    from playwright.async_api import async_playwright
    import importlib.metadata

    chromium = next(c for c in CHROMIUM_CANDIDATES if Path(c).exists())
    url = serve()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--force-color-profile=srgb"],
        )
        ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        pages = [await ctx.new_page(), await ctx.new_page()]
        for p in pages:  # warm both pages once
            await shoot(p, url)
        seq = await closed_loop(pages[:1], url, requests)
        par = await closed_loop(pages, url, requests)
        # Playwright's driver process is our child; the browser is its child.
        pss = None
        for child in descendants(os.getpid())[1:]:
            b = browser_pid(child)
            if b:
                pss = pss_mib(b)
                break
        await browser.close()
    return {
        "playwright": importlib.metadata.version("playwright"),
        "chromium": chromium,
        "sequential": seq,
        "parallel2": par,
        "pss_mib": pss,
        "screenshot_retries": RETRIES["count"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--install-only", action="store_true")
    a = ap.parse_args()
    ensure_playwright()
    if a.install_only:
        return
    print(json.dumps(asyncio.run(run(a.requests))))


if __name__ == "__main__":
    main()
