#!/usr/bin/env bash
# Schema-driven fuzzing of the api-server against its own OpenAPI document.
#
# Installs schemathesis (pinned) into .tools/fuzz-venv when it is missing, builds the debug
# api-server, starts it on a free port with a temporary SQLite database, an admin token, a
# metrics token (so /metrics is served and fuzzed behind it) and demo payments (purchases answer a local checkout URL) and no browser (screenshots answer
# 503 BROWSER_UNAVAILABLE, as documented), makes a user with
# an API key through the API, and runs schemathesis against /openapi.json with the checks
# not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance, unsupported_method and ignored_auth: it fails on any 5xx,
# any status or content type the document does not declare, any body that does not match
# its schema, a wrong method that is not 405, and an authenticated endpoint that answers
# without credentials. The number of examples is bounded so that a run takes about
# three minutes or less on two cores.
#
#   scripts/fuzz-api.sh            the whole run
#   FUZZ_EXAMPLES=10 scripts/fuzz-api.sh   fewer examples per operation (quicker)
#   FUZZ_SEED=42 scripts/fuzz-api.sh       a reproducible run
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=.tools/fuzz-venv
st="$venv/bin/schemathesis"
examples="${FUZZ_EXAMPLES:-50}"

# 1. schemathesis, pinned, in a project-local virtualenv (or the user site when the
#    machine's Python has no venv module).
if ! "$st" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  echo "fuzz: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  if python3 -m venv "$venv" >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION"
  else
    # No venv module (Debian without python3-venv): the user site, which a
    # system-managed Python only allows when told so.
    rm -rf "$venv"
    pip=(python3 -m pip install -q --disable-pip-version-check --user)
    "${pip[@]}" "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null ||
      "${pip[@]}" --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
    st="$(python3 -m site --user-base)/bin/schemathesis"
  fi
fi
"$st" --version

# 2. The server: the debug binary on a free port, a fresh database, an admin token, and
#    no rate limits (schemathesis sends far more than a client would; the 429s are
#    documented, and tests/it/ratelimit.rs tests them).
cargo build -q -p api-server --bin api-server
bin=target/debug/api-server
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
scratch_and_stop_on_exit

port="$(free_port)"
admin_token="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
metrics_token="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
base="http://127.0.0.1:$port"
# A WebDriver URL nothing answers at: no browser is started, screenshots answer 503.
SHOTLEDGER__SERVER__BIND="127.0.0.1:$port" \
DATABASE_URL="sqlite://$work/fuzz.db" \
SHOTLEDGER__ADMIN__TOKEN="$admin_token" \
SHOTLEDGER__METRICS__TOKEN="$metrics_token" \
SHOTLEDGER__CAPTURE__WEBDRIVER_URL="http://127.0.0.1:9/" \
SHOTLEDGER__SCREENSHOTS__CACHE_DIR="$work/cache" \
SHOTLEDGER__PAYMENTS__PROVIDER=demo \
SHOTLEDGER__RATELIMIT__PER_KEY_RPS=0 \
SHOTLEDGER__RATELIMIT__PER_IP_RPS=0 \
SHOTLEDGER__RATELIMIT__CAPTURES_PER_ACCOUNT=0 \
RUST_LOG="${RUST_LOG:-warn}" \
  "$bin" >"$work/server.log" 2>&1 &
server_pid=$!

# Waits for /healthz, then makes a user with credits and an API key through the API (the
# key needs a session: signup's cookie, with a JSON body). Prints "ACCOUNT KEY".
# (Python's standard library, so curl need not be installed.)
if ! setup_out="$(python3 - "$base" "$admin_token" "$server_pid" <<'PY'
import http.cookiejar, json, os, sys, time, urllib.request

base, admin, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

def call(method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with opener.open(req, timeout=10) as res:
        return json.loads(res.read() or b"null")

deadline = time.time() + 30
while True:
    try:
        call("GET", "/healthz")
        break
    except Exception as e:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("the api-server exited")
        if time.time() > deadline:
            sys.exit(f"the api-server is not healthy: {e}")
        time.sleep(0.1)
email = f"fuzz-{int(time.time())}@example.com"
account = call("POST", "/api/v1/auth/signup", {"email": email, "password": "fuzzing password 123"})["accountId"]
key = call("POST", "/api/v1/api-keys", {"name": "fuzz"})["key"]
call("POST", f"/admin/v1/accounts/{account}/credits", {"amount": 1000, "description": "fuzzing"},
     {"authorization": f"Bearer {admin}"})
print(account, key)
PY
)"; then
  echo "fuzz: could not set the server up; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
read -r account api_key <<<"$setup_out"

# 4. schemathesis, with each security scheme of the document given its credential. The
#    checks: every one but those that need data or links this run does not set up
#    (negative/positive data, stateful resource checks, response headers).
cat >"$work/schemathesis.toml" <<EOF
[checks]
negative_data_rejection.enabled = false
positive_data_acceptance.enabled = false
missing_required_header.enabled = false
use_after_free.enabled = false
ensure_resource_availability.enabled = false
response_headers_conformance.enabled = false

[auth.openapi.apiKey]
api_key = "$api_key"

[auth.openapi.admin]
bearer = "$admin_token"

[auth.openapi.metricsToken]
bearer = "$metrics_token"

# Without a browser a capture answers 503 BROWSER_UNAVAILABLE (documented, like its 502
# and 504): not a server fault. A 500 there is still a failure: it is not documented, so
# status_code_conformance catches it.
[[operations]]
include-path = "/api/v1/screenshot"
checks.not_a_server_error.enabled = false

# Likewise /readyz answers 503 naming the browser that is not there (documented).
[[operations]]
include-path = "/readyz"
checks.not_a_server_error.enabled = false

# The admin operations on an account act on the real one (random ids only reach the 404).
[[operations]]
include-path-regex = "^/admin/v1/accounts/"
parameters = { "path.id" = "$account" }
EOF

# One worker: schemathesis's workers are threads, and CPython 3.11 keeps the AST
# constructor's recursion depth per interpreter, not per thread, so two workers that build
# ASTs at once (hypothesis does, to describe its strategies) can fail a run with
# "AST constructor recursion depth mismatch", an error of the tool and not of the server.
status=0
"$st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --phases examples,coverage,fuzzing \
  --max-examples "$examples" \
  ${FUZZ_SEED:+--seed "$FUZZ_SEED"} \
  --workers 1 \
  --request-timeout 20 \
  --generation-database none \
  --suppress-health-check all \
  --report junit --report-dir "$work/report" \
  --no-color || status=$?

if grep -q "panicked" "$work/server.log"; then
  echo "fuzz: the api-server panicked:" >&2
  grep -A5 "panicked" "$work/server.log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "fuzz: FAILED (schemathesis exit $status); the server's log:" >&2
  tail -n 50 "$work/server.log" >&2
  exit 1
fi
echo "fuzz: the api-server matches its OpenAPI document"
