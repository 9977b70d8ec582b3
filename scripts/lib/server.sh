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
