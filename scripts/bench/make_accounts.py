#!/usr/bin/env python3
"""Creates N accounts through the admin API (setup of the spread load, not measured) and
prints their ids, one a line. The server's signup bonus funds them.

    python3 scripts/bench/make_accounts.py BASE_URL ADMIN_TOKEN N [PREFIX] > ids.txt
"""

import http.client
import json
import sys
import threading
import urllib.parse

base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
prefix = sys.argv[4] if len(sys.argv) > 4 else "spread"
url = urllib.parse.urlsplit(base)
ids = [None] * n
THREADS = 8


def worker(t):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    for i in range(t, n, THREADS):
        body = json.dumps({"email": f"{prefix}-{i}@bench.example.com"})
        conn.request("POST", "/admin/v1/accounts", body,
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = conn.getresponse()
        answer = r.read()
        if r.status != 201:
            sys.exit(f"make_accounts: {r.status} {answer[:200]!r}")
        ids[i] = json.loads(answer)["accountId"]


workers = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
for w in workers:
    w.start()
for w in workers:
    w.join()
if any(i is None for i in ids):
    sys.exit("make_accounts: some accounts were not created")
print("\n".join(ids))
