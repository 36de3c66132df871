#!/usr/bin/env bash
# Per short connection, under full load: the forwarder's system calls by
# kind, context switches and epoll_wait calls (`perf stat` on tracepoints,
# which, unlike strace, barely slows the forwarder down), and the TCP
# segments all processes sent (`nstat`). Each variant forwards `connrate`'s
# connections to `echod once` for SECS seconds.
# Reproduces the per-connection counts of BENCHMARKS.md, "Short connections".
#
#   bash examples/forwarder/bench/kernel_events.sh                 # VARIANTS="ours nohc nginx nginx-hc" SECS=3
#
# Variants as bench/lib.sh's fwd_spec names them. Needs perf (linux-perf).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
TOOLS=$PEERS_DIR/peertools/target/release
SECS=${SECS:-3} WORKERS=${WORKERS:-64} VARIANTS=${VARIANTS:-ours nohc nginx nginx-hc}
LPORT=${LPORT:-19000} BPORT=${BPORT:-19001}

source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
start_echod_once kernel-events

events=(-e context-switches -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_epoll_ctl
    -e syscalls:sys_enter_accept4 -e syscalls:sys_enter_recvfrom -e syscalls:sys_enter_sendto
    -e syscalls:sys_enter_writev -e syscalls:sys_enter_shutdown -e syscalls:sys_enter_close
    -e raw_syscalls:sys_enter)
for v in $VARIANTS; do
    fwd_start "$(fwd_spec "$v" "$STAGED")" "$LPORT" "$BPORT" 2>/dev/null || exit 1
    pid=$FWD_PID
    sleep 0.5
    perf stat "${events[@]}" -p "$(tree_pids "$pid" | paste -sd,)" -o "$STAGED/$v.stat" -- sleep "$SECS" 2>/dev/null &
    stat=$!
    nstat -n >/dev/null
    out=$("$TOOLS/connrate" "127.0.0.1:$LPORT" "$WORKERS" "$SECS")
    segs=$(nstat 2>/dev/null | awk '$1 == "TcpOutSegs" {print $2}')
    wait "$stat" || true
    fwd_stop "$pid" >/dev/null 2>&1 || true # HAProxy exits 143 on SIGTERM
    conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
    echo "$v: $out; per connection:"
    awk -v n="$conns" -v s="$segs" '
        $1 ~ /^[0-9,]+$/ { gsub(",", "", $1); sub(/^.*:/, "", $2); printf "  %-16s %6.2f\n", $2, $1 / n }
        END { printf "  %-16s %6.2f\n", "tcp_segments", s / n }' "$STAGED/$v.stat"
    sleep 0.5
done
