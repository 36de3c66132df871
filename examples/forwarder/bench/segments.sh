#!/usr/bin/env bash
# Segment sizes the forwarder sends to its backend while iperf3 pushes one
# stream through it: `tcpdump -i lo` on the backend's port for SECS seconds,
# then the count of segments, of those under 1,000 bytes, and the commonest
# sizes. Shows why the copy buffer is 63 KiB (BENCHMARKS.md, "copy buffers").
#
#   bash examples/forwarder/bench/segments.sh                                  # this build
#   BASE_BIN=/path/to/forwarder ENV="FORWARDER_SPLICE=off" bash examples/forwarder/bench/segments.sh
#
# BASE_BIN runs that binary instead of this build, with ENV in its
# environment (builds before 254b122 copied through 64 KiB buffers with
# FORWARDER_SPLICE=off). Needs root (tcpdump), iperf3 and tcpdump.
set -uo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
SECS=${SECS:-2} IPORT=${IPORT:-15298} LPORT=${LPORT:-21098} ENV=${ENV:-}

command -v tcpdump >/dev/null || { apt-get update -qq && apt-get install -y -qq tcpdump; } >&2
source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
BIN=$(stage_forwarder segments) || exit 1
FWD=$BIN/forwarder
[ -n "${BASE_BIN:-}" ] && FWD=$BIN/base-forwarder
iperf3 -s -B 127.0.0.1 -p "$IPORT" >/dev/null 2>&1 &
IPERF=$!
env $ENV "$FWD" -p "127.0.0.1:$LPORT=127.0.0.1:$IPORT" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID $IPERF 2>/dev/null; rm -rf "$BIN"' EXIT
wait_listen "$IPORT" && wait_listen "$LPORT" || exit 1
timeout $((SECS + 2)) tcpdump -i lo -nn -s 100 -w "$BIN/cap.pcap" "tcp dst port $IPORT and greater 1" >/dev/null 2>&1 &
DUMP=$!
sleep 0.5
iperf3 -c 127.0.0.1 -p "$LPORT" -t "$SECS" | grep receiver
wait "$DUMP"
tcpdump -nn -r "$BIN/cap.pcap" 2>/dev/null |
    awk '{for (i = 1; i < NF; i++) if ($i == "length") print $(i + 1) + 0}' |
    awk '{n++; if ($1 < 1000) small++; size[$1]++}
        END {printf "segments %d, under 1,000 bytes %d\ncommonest sizes (count, bytes):\n", n, small
            for (s in size) print size[s], s | "sort -rn | head -4"}'
