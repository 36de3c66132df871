#!/usr/bin/env bash
# Requests per second of a hello-world axum route served through a monitored
# listener, against plain `axum::serve(TcpListener)`, in the same run.
#
#   bash bench/axum.sh            # DURATION=5s CONNS=32 RUNS=3 by default
#
# The servers are examples/axum (release build) in separate processes:
#   plain      --plain: tokio TcpListener, ConnectInfo<SocketAddr>
#   monitored  monconn Listener, ConnectInfo<ConnInfo>, no metrics recorder
#   +metrics   the same with the Prometheus recorder installed (the sweeper
#              publishes; each closed connection records its duration)
# wrk (installed with apt-get if missing) drives GET /hello, keep-alive and
# with `Connection: close` (one request per connection). Runs alternate
# between the servers; the table gives the median of RUNS runs of each and
# the ratio to plain.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
RUNS=${RUNS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

if ! command -v wrk >/dev/null; then
    echo "installing wrk" >&2
    apt-get update -qq >&2 && apt-get install -y -qq wrk >&2
fi
cargo build --release --quiet --example axum --features axum,metrics
BIN="$TARGET_DIR/release/examples/axum"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

declare -A PORT
start() { # name, flags...
    local name=$1; shift
    local port; port=$(free_port)
    RUST_LOG=warn "$BIN" --listen "127.0.0.1:$port" "$@" >/dev/null 2>&1 &
    PIDS+=($!)
    PORT[$name]=$port
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/hello" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "server $name did not start" >&2
    exit 1
}
start plain --plain
start monitored --no-metrics
start metrics

rps() { # name, extra wrk args...
    local name=$1; shift
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$@" "http://127.0.0.1:${PORT[$name]}/hello")
    if grep -q -E "Non-2xx|Socket errors" <<<"$out"; then
        echo "$name: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')" >&2
    fi
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

SERVERS=(plain monitored metrics)
echo "| connections | server | req/s (median of $RUNS) | runs | ratio to plain |"
echo "|---|---|---:|---|---:|"
for mode in keep-alive close; do
    args=()
    [ "$mode" = close ] && args=(-H "Connection: close")
    declare -A RUNS_OF=()
    for _ in $(seq "$RUNS"); do
        for name in "${SERVERS[@]}"; do
            RUNS_OF[$name]+="$(rps "$name" "${args[@]}") "
        done
    done
    base=$(tr ' ' '\n' <<<"${RUNS_OF[plain]}" | grep . | median)
    for name in "${SERVERS[@]}"; do
        med=$(tr ' ' '\n' <<<"${RUNS_OF[$name]}" | grep . | median)
        ratio=$(awk -v a="$med" -v b="$base" 'BEGIN {printf "%.3f", a / b}')
        label=$name; [ "$name" = metrics ] && label="monitored + metrics"
        printf '| %s | %s | %.0f | %s | %s |\n' "$mode" "$label" "$med" "${RUNS_OF[$name]% }" "$ratio"
    done
    unset RUNS_OF
done
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $(nproc) CPUs, $(uname -r)"
