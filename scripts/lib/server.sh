# Shared by the scripts that start an api-server of their own (bench-api.sh, fuzz-api.sh).
# Source it from the repository root.

# Prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Sets `work` to a fresh temporary folder and `server_pid` to empty; on exit the server
# whose pid the caller stored in `server_pid` is stopped (if it still runs) and `work`
# is removed.
scratch_and_stop_on_exit() {
    work="$(mktemp -d)"
    server_pid=""
    trap _stop_server_and_clean EXIT
}

_stop_server_and_clean() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}

# Waits up to 10 s for GET $1/healthz to answer 2xx; fails otherwise.
wait_healthy() {
    for _ in $(seq 1 100); do
        curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    curl -fsS "$1/healthz" >/dev/null
}

# Samples process $1's resident set (VmRSS, KiB) into file $2 every 0.2 s, in the
# background, until stop_rss_sampler; sets `rss_sampler_pid`.
start_rss_sampler() {
    local pid=$1 out=$2
    : >"$out"
    (
        while [ -r "/proc/$pid/status" ]; do
            awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" >>"$out" 2>/dev/null || break
            sleep 0.2
        done
    ) &
    rss_sampler_pid=$!
}

# Stops the sampler and prints the largest sample of file $1, in MiB.
stop_rss_sampler() {
    kill "$rss_sampler_pid" 2>/dev/null || true
    wait "$rss_sampler_pid" 2>/dev/null || true
    sort -n "$1" | tail -1 | awk '{printf "%.0f\n", $1 / 1024}'
}
