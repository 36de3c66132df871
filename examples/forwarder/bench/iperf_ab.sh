#!/usr/bin/env bash
# iperf3 through the forwarder and peers, interleaved A/B: throughput and each
# forwarder's CPU time (user + system, whole process tree) per run, the order
# of the variants turning every repetition. Reproduces the "copy buffers"
# figures of BENCHMARKS.md.
#
#   bash examples/forwarder/bench/iperf_ab.sh                      # P=1 SECS=4 REPS=4 VARIANTS="ours splice haproxy nginx"
#   P=4 bash examples/forwarder/bench/iperf_ab.sh
#   BASE_BIN=/path/to/forwarder VARIANTS="ours base base-copy haproxy" bash examples/forwarder/bench/iperf_ab.sh
#
# Variants as bench/lib.sh's fwd_spec names them: ours = the forwarder's
# defaults (copies through 63 KiB buffers), splice = --splice, base = the
# forwarder binary BASE_BIN (an earlier build: A/B of a change), base-copy =
# BASE_BIN with FORWARDER_SPLICE=off (builds before 254b122 spliced by
# default, and took "off" to copy through 64 KiB buffers); other names are
# ../shared/bench/forwarders.sh builtins (haproxy, haproxy-splice, nginx,
# socat, rawfwd). NICE=-15 (root) runs everything (iperf3 both ends,
# the forwarders) at that priority. Prints one line per run, then the median per variant.
set -uo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
P=${P:-1} SECS=${SECS:-4} REPS=${REPS:-4} NICE=${NICE:-0}
VARIANTS=${VARIANTS:-ours splice haproxy nginx}
IPORT=${IPORT:-15299} LPORT0=${LPORT0:-21100}

# Everything started from here on (iperf3, the forwarders and all their
# threads) inherits this shell's priority.
renice -n "$NICE" -p $$ >/dev/null
source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
BIN=$(stage_forwarder iperf-ab) || exit 1
iperf3 -s -B 127.0.0.1 -p "$IPORT" >/dev/null 2>&1 &
IPERF=$!
declare -A PORTS PIDS
cleanup() {
    local p
    for p in "${PIDS[@]}"; do fwd_stop "$p"; done
    kill "$IPERF" 2>/dev/null
    rm -rf "$BIN"
}
trap cleanup EXIT
wait_listen "$IPORT" || exit 1

i=0
for v in $VARIANTS; do
    i=$((i + 1))
    fwd_start "$(fwd_spec "$v" "$BIN")" $((LPORT0 + i)) "$IPORT" 2>/dev/null || exit 1
    PORTS[$v]=$((LPORT0 + i)) PIDS[$v]=$FWD_PID
done

results=()
for rep in $(seq "$REPS"); do
    for v in $(rotated "$rep" $VARIANTS); do
        line=$(iperf_run "$v" "$rep" "${PORTS[$v]}" "${PIDS[$v]}")
        echo "$line"
        results+=("$line")
    done
done
echo "medians (Gbit/s, P=$P):"
for v in $VARIANTS; do
    echo "$v $(printf '%s\n' "${results[@]}" | awk -v v="$v" '$1 == v {sub("gbps=", "", $3); print $3}' | median)"
done
