#!/usr/bin/env bash
# The toolchain pin, the workspace's rust-version and the lockfile agree: every locked
# dependency (for this platform) builds with the declared rust-version, every member
# inherits it, and rust-toolchain.toml pins exactly that version, so the declared minimum
# is what CI builds with. Run by `just lint`.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
metadata=$(mktemp)
trap 'rm -f "$metadata"' EXIT
cargo metadata --locked --offline --format-version 1 --filter-platform "$host" >"$metadata"

python3 - "$metadata" <<'PY'
import json, re, sys, tomllib

def version(text):
    return tuple(int(x) for x in text.split("."))[:2]

with open(sys.argv[1]) as f:
    meta = json.load(f)
with open("Cargo.toml", "rb") as f:
    declared_text = tomllib.load(f)["workspace"]["package"]["rust-version"]
with open("rust-toolchain.toml", "rb") as f:
    channel = tomllib.load(f)["toolchain"]["channel"]
declared = version(declared_text)
problems = []

if not re.fullmatch(r"\d+\.\d+\.\d+", channel):
    problems.append(f"rust-toolchain.toml: channel {channel!r} is not an exact version")
elif version(channel) != declared:
    problems.append(f"rust-toolchain.toml pins {channel}; the workspace declares rust-version {declared_text}")

used = {node["id"] for node in meta["resolve"]["nodes"]}
members = set(meta["workspace_members"])
newest = (0, 0), "", ""
for p in meta["packages"]:
    if p["id"] not in used:
        continue
    name, need = p["name"], p.get("rust_version")
    if p["id"] in members:
        if need is None or version(need) != declared:
            problems.append(f"{name}: rust-version {need}, not the workspace's (rust-version.workspace = true)")
        continue
    if need is None:
        continue
    newest = max(newest, (version(need), name, p["version"]))
    if version(need) > declared:
        problems.append(f"{name} {p['version']} needs Rust {need}, newer than rust-version {declared_text}")

need, name, ver = newest
print(f"rust-version {declared_text}, toolchain {channel}; the newest need among locked crates: "
      f"{name} {ver} ({need[0]}.{need[1]})")
for problem in problems:
    print("  " + problem)
sys.exit(1 if problems else 0)
PY
