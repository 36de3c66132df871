#!/usr/bin/env bash
# Requests per second of a hello-world axum route served through a monitored
# listener, against plain `axum::serve(TcpListener)`, in the same run.
#
#   bash bench/axum.sh            # DURATION=3s CONNS=32 RUNS=11 by default
#
# The servers are examples/axum (release build) in separate processes:
#   plain      --plain: tokio TcpListener, ConnectInfo<SocketAddr>
#   monitored  monconn Listener, ConnectInfo<ConnInfo>, no metrics recorder,
#              TCP keepalive off like plain (--keepalive 0; the default 30 s
#              period costs three setsockopt calls per connection)
#   +metrics   the same with the Prometheus recorder installed (the sweeper
#              publishes; each closed connection records its duration)
# wrk (installed with apt-get if missing) drives GET /hello, keep-alive and
# with `Connection: close` (one request per connection), in RUNS rounds
# that run each server once, one after the other. The table gives each
# server's median req/s and server CPU time per request (from /proc/PID/stat
# around each run), and the median over rounds of the ratio to plain in the
# same round (req/s: server / plain; CPU: plain / server, so that above 1 is
# cheaper): on a shared, busy machine the paired CPU ratio is the steadiest. With 2 CPUs or more, each server runs one tokio worker
# pinned to CPU 0 and wrk is pinned to CPU 1 (PIN=0 to turn this off), so
# that the figure is the server's cost per request on one core.
set -euo pipefail

cd "$(dirname "$0")/.."
# The median of the numbers on standard input, one per line.
median() {
	sort -n | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'
}
DURATION=${DURATION:-3s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
RUNS=${RUNS:-11}
PIN=${PIN:-1}
[ "$(nproc)" -ge 2 ] || PIN=0
SERVER_PIN=()
WRK_PIN=()
if [ "$PIN" = 1 ]; then
    SERVER_PIN=(taskset -c 0)
    WRK_PIN=(taskset -c 1)
    export TOKIO_WORKER_THREADS=1
fi
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

declare -A PORT
declare -A PID_OF
start() { # name, flags...: starts a server on a free port, waits until it listens
    local name=$1; shift
    local log; log=$(mktemp)
    RUST_LOG=info NO_COLOR=1 "${SERVER_PIN[@]}" "$BIN" --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
    PIDS+=($!)
    PID_OF[$name]=$!
    for _ in $(seq 200); do
        local port
        port=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'addr=127\.0\.0\.1:[0-9]*' | head -1 | cut -d: -f2 || true)
        if [ -n "$port" ]; then
            PORT[$name]=$port
            rm -f "$log"
            return
        fi
        sleep 0.1
    done
    echo "server $name did not start:" >&2
    cat "$log" >&2
    exit 1
}
start plain --plain
start monitored --no-metrics --keepalive 0
start metrics --keepalive 0

cpu_ticks() { # pid -> utime + stime of the process, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# One wrk run: prints "req/s cpu-us-per-request".
run() { # name, extra wrk args...
    local name=$1; shift
    local out before after
    before=$(cpu_ticks "${PID_OF[$name]}")
    out=$("${WRK_PIN[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$@" "http://127.0.0.1:${PORT[$name]}/hello")
    after=$(cpu_ticks "${PID_OF[$name]}")
    if grep -q -E "Non-2xx|Socket errors" <<<"$out"; then
        echo "$name: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')" >&2
    fi
    local rps requests
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v r="$rps" -v n="$requests" -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.0f %.2f\n", r, t / hz * 1e6 / n}'
}


# Median of the per-round ratios base[i] / x[i] (or x[i] / base[i] with "up"):
# rounds are adjacent in time, so a pair shares the machine's load of the moment.
paired() { # base-list, list, up|down
    awk -v a="$1" -v b="$2" -v dir="$3" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ");
        for (i = 1; i <= n; i++) r[i] = (dir == "up") ? y[i] / x[i] : x[i] / y[i];
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        printf "%.3f", (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
    }'
}

SERVERS=(plain monitored metrics)
echo "| connections | server | req/s (median) | req/s ratio | server CPU µs/request (median) | CPU ratio |"
echo "|---|---|---:|---:|---:|---:|"
for mode in keep-alive close; do
    args=()
    [ "$mode" = close ] && args=(-H "Connection: close")
    declare -A RPS=() CPU=()
    for _ in $(seq "$RUNS"); do
        for name in "${SERVERS[@]}"; do
            read -r r c < <(run "$name" "${args[@]}")
            RPS[$name]+="$r "
            CPU[$name]+="$c "
        done
    done
    for name in "${SERVERS[@]}"; do
        rps=$(tr ' ' '\n' <<<"${RPS[$name]}" | grep . | median)
        cpu=$(tr ' ' '\n' <<<"${CPU[$name]}" | grep . | median)
        rps_ratio=$(paired "${RPS[plain]}" "${RPS[$name]}" up)
        cpu_ratio=$(paired "${CPU[plain]}" "${CPU[$name]}" down)
        label=$name; [ "$name" = metrics ] && label="monitored + metrics"
        printf '| %s | %s | %.0f | %s | %.2f | %s |\n' "$mode" "$label" "$rps" "$rps_ratio" "$cpu" "$cpu_ratio"
        echo "$mode $label: req/s ${RPS[$name]}; CPU µs/request ${CPU[$name]}" >&2
    done
    unset RPS CPU
done
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION, pinned: $PIN, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
