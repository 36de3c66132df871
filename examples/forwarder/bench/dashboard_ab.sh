#!/usr/bin/env bash
# iperf3 through one forwarder with its admin address on, interleaved A/B:
# "plain" (nobody watching) against "watched" (the dashboard's event stream
# open, with its connection table, and a tap on an unrelated IP, both read
# by curl as a browser would). Throughput and the forwarder's CPU per run;
# the order turns every repetition. Reproduces the "dashboard and tap"
# figures of BENCHMARKS.md.
#
#   bash examples/forwarder/bench/dashboard_ab.sh     # P=1 SECS=4 REPS=6
set -uo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
P=${P:-1} SECS=${SECS:-4} REPS=${REPS:-6}
IPORT=${IPORT:-15399} LPORT=${LPORT:-21300} APORT=${APORT:-21399}

source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
BIN=$(stage_forwarder dashboard-ab) || exit 1
iperf3 -s -B 127.0.0.1 -p "$IPORT" >/dev/null 2>&1 &
IPERF=$!
WATCHERS=()
unwatch() {
    local w
    for w in "${WATCHERS[@]}"; do kill "$w" 2>/dev/null; wait "$w" 2>/dev/null; done
    WATCHERS=()
}
cleanup() {
    unwatch
    fwd_stop "$FWD"
    kill "$IPERF" 2>/dev/null
    rm -rf "$BIN"
}
trap cleanup EXIT
wait_listen "$IPORT" || exit 1
fwd_start "ours=$BIN/forwarder --access-log off --admin 127.0.0.1:$APORT -p 127.0.0.1:\$LPORT=127.0.0.1:\$BPORT" \
    "$LPORT" "$IPORT" 2>/dev/null || exit 1
FWD=$FWD_PID
wait_listen "$APORT" || exit 1

# The page's stream (its table sorted by rate, as the page asks) and a tap
# that matches no connection of the run.
watch() {
    curl -sN "http://127.0.0.1:$APORT/events?sort=rate" >/dev/null &
    WATCHERS+=($!)
    curl -sN "http://127.0.0.1:$APORT/tap?ip=10.9.9.9" >/dev/null &
    WATCHERS+=($!)
    sleep 1.5 # a tick or so: the sampler now lists the connections
}

results=()
for rep in $(seq "$REPS"); do
    for v in $(rotated "$rep" plain watched); do
        [ "$v" = watched ] && watch
        line=$(iperf_run "$v" "$rep" "$LPORT" "$FWD")
        unwatch
        echo "$line"
        results+=("$line")
    done
done
echo "medians (Gbit/s, P=$P):"
for v in plain watched; do
    echo "$v $(printf '%s\n' "${results[@]}" | awk -v v="$v" '$1 == v {sub("gbps=", "", $3); print $3}' | median)"
done
echo "paired ratios watched/plain:"
printf '%s\n' "${results[@]}" | awk '{sub("gbps=", "", $3); g[$2 " " $1] = $3} END {for (k in g) if (k ~ / plain$/) {split(k, a, " "); w = g[a[1] " watched"]; if (w) print w / g[k]}}' | median
