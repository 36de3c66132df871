#!/usr/bin/env bash
# System calls per short connection, the forwarder against nginx stream
# (or VARIANTS, as bench/lib.sh's fwd_spec names them):
# `strace -c -f` attached to each (all its processes and threads) while
# `connrate` opens short connections through it to `echod once`. strace
# slows both down; the counts per connection are what this is for. Also the
# TCP segments sent per connection over loopback (all processes: client,
# forwarder, backend), from `nstat`.
# Reproduces the per-connection counts quoted in BENCHMARKS.md ("Forwarder").
#
#   bash examples/forwarder/bench/syscalls.sh          # SECS=3 WORKERS=8; needs strace
#   VARIANTS="ours nohc nginx nginx-hc" bash examples/forwarder/bench/syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
TOOLS=$PEERS_DIR/peertools/target/release
SECS=${SECS:-3} WORKERS=${WORKERS:-8} VARIANTS=${VARIANTS:-ours nginx}
LPORT=${LPORT:-19000} BPORT=${BPORT:-19001}

source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
start_echod_once syscalls

for v in $VARIANTS; do
    fwd_start "$(fwd_spec "$v" "$STAGED")" "$LPORT" "$BPORT" 2>/dev/null || exit 1
    pid=$FWD_PID
    mkdir -p "$STAGED/$v"
    sleep 1
    attach=()
    for p in $pid $(pgrep -P "$pid" || true); do attach+=(-p "$p"); done
    strace -c -f "${attach[@]}" -o "$STAGED/$v/strace" 2>/dev/null &
    tracer=$!
    sleep 0.5
    nstat -n >/dev/null
    out=$("$TOOLS/connrate" "127.0.0.1:$LPORT" "$WORKERS" "$SECS")
    sleep 0.3
    segs=$(nstat 2>/dev/null | awk '$1 == "TcpOutSegs" {print $2}')
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    fwd_stop "$pid" >/dev/null 2>&1 || true # HAProxy exits 143 on SIGTERM
    conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
    echo "$v: $conns connections; TCP segments per connection: $(awk -v s="$segs" -v n="$conns" 'BEGIN {printf "%.2f", s / n}'); system calls per connection:"
    awk -v n="$conns" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
            printf "  %-12s %6.2f\n", $NF, $4 / n; t += $4 }
        END { printf "  %-12s %6.2f\n", "total", t / n }' "$STAGED/$v/strace"
    sleep 0.5
done
