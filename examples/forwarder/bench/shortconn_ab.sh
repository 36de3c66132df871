#!/usr/bin/env bash
# Short connections per second, interleaved A/B: the forwarder with its
# default shards (one per core, a SO_REUSEPORT socket each), with the shards
# sharing one listening socket (--accept shared), with one shard
# (--threads 1), with `half_close: false` (nohc), nginx stream and nginx
# with proxy_half_close on, each
# against `echod once` and driven by `connrate` (../shared/bench/peertools).
# Reproduces the A/B table of BENCHMARKS.md, "Forwarder", short connections.
#
#   bash examples/forwarder/bench/shortconn_ab.sh                 # REPS=5 SECS=5 WORKERS=64
#   VARIANTS="ours one nginx" REPS=4 bash examples/forwarder/bench/shortconn_ab.sh
#   BASE_BIN=/path/to/forwarder VARIANTS="ours base" bash examples/forwarder/bench/shortconn_ab.sh
#
# Variants as bench/lib.sh's fwd_spec names them, and direct (no forwarder:
# connrate against the backend); base = the forwarder binary
# BASE_BIN with its defaults (a build of an earlier commit, say: A/B of a
# change).
#
# Prints one line per run: variant, repetition, connrate's output and the
# forwarder's CPU time (user + system, all its processes) per connection; then the
# median per variant. NICE=-15 (root) runs everything (forwarder, backend,
# client) at that priority, as bench/forwarder.sh does; FWD_NICE=0 with it
# leaves the forwarder and the backend at normal priority (the client wins
# the cores: the case --accept shared is for).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
TOOLS=$PEERS_DIR/peertools/target/release
REPS=${REPS:-5} SECS=${SECS:-5} WORKERS=${WORKERS:-64} NICE=${NICE:-0}
FWD_NICE=${FWD_NICE:-$NICE}
VARIANTS=${VARIANTS:-ours shared one nginx nginx-hc}
LPORT=${LPORT:-19000} BPORT=${BPORT:-19001}

source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
# The backend and the forwarders inherit this shell's priority, FWD_NICE;
# the client runs at NICE.
renice -n "$FWD_NICE" -p $$ >/dev/null
start_echod_once shortconn-ab

TCK=$(getconf CLK_TCK)
results=()
for rep in $(seq "$REPS"); do
    for v in $(rotated "$rep" $VARIANTS); do
        port=$LPORT pid=$ECHOD
        if [ "$v" = direct ]; then
            port=$BPORT # no forwarder: the CPU figure is the backend's
        else
            fwd_start "$(fwd_spec "$v" "$STAGED")" "$LPORT" "$BPORT" 2>/dev/null || exit 1
            pid=$FWD_PID
        fi
        c0=$(ticks "$pid")
        out=$(nice -n $((NICE - FWD_NICE)) "$TOOLS/connrate" "127.0.0.1:$port" "$WORKERS" "$SECS")
        c1=$(ticks "$pid")
        conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
        echo "$v $rep $out cpu_us_per_conn=$(( (c1 - c0) * 1000000 / TCK / (conns > 0 ? conns : 1) ))"
        results+=("$v $(sed -n 's/.*rate=//p' <<<"$out")")
        # HAProxy exits 143 on SIGTERM: not an error of this script.
        [ "$v" = direct ] || fwd_stop "$pid" >/dev/null 2>&1 || true
        sleep 0.5
    done
done
echo "medians:"
for v in $VARIANTS; do
    echo "$v $(printf '%s\n' "${results[@]}" | awk -v v="$v" '$1 == v {print $2}' | median)"
done
