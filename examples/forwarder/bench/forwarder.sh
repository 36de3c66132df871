#!/usr/bin/env bash
# The forwarder against real peers, in one run: HAProxy (plain and splice),
# nginx stream, socat, a plain tokio copy_bidirectional forwarder (rawfwd)
# and no forwarder at all. Reproduces the table of BENCHMARKS.md,
# "Forwarder vs HAProxy, nginx, socat, plain tokio".
#
#   bash examples/forwarder/bench/forwarder.sh              # everything, REPS=3 (about 25 minutes)
#   PHASES="iperf redis" bash examples/forwarder/bench/forwarder.sh
#
# Steps:
#   1. ../shared/bench/setup.sh (or $PEERS_DIR/setup.sh): installs HAProxy, nginx,
#      socat, iperf3, redis and wrk from Debian, builds rawfwd and peertools;
#   2. builds examples/forwarder (and examples/fwdbench, the copy engine behind a
#      bare accept loop, measured too with ENGINE=1, as one current-thread runtime
#      per core with a SO_REUSEPORT listener each) in release, and copies the
#      binaries aside so that a rebuild during the run cannot change them;
#   3. measure.sh with every peer: iperf3 1 and 4 streams, redis-benchmark
#      pipeline 1 and 16, memory per idle connection at MEM_N connections, short
#      connections per second (knobs: PHASES REPS MEM_N MEM_REPS IPERF_SECS
#      REDIS_N RATE_SECS, see measure.sh);
#   4. CPU=1 (default): the forwarders' own CPU time per unit of work
#      (per GB through iperf3, per 1,000 redis GETs, per 1,000 short
#      connections), from /proc/PID/stat around each run: on a busy machine
#      this is far steadier than the rates;
#   5. forwarder_ratios.py: ours against the best peer of the same run, per row.
#
# NGINX_HC=1 adds nginx with `proxy_half_close on` (bench/nginx_half_close.sh).
# NICE=-15 runs the measurement at a higher priority (root only), which keeps
# other work on a shared machine from skewing it; every peer gets the same.
# Results land in $OUT (default target/bench-forwarder/<date>).
set -euo pipefail

cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
OUT=${OUT:-$ROOT/target/bench-forwarder/$(date -u +%Y%m%d-%H%M%S)}
NICE=${NICE:-0}
CPU=${CPU:-1}
ENGINE=${ENGINE:-0}
export REPS=${REPS:-3}
mkdir -p "$OUT/bin"

"$PEERS_DIR/setup.sh"
cargo build -q --release -p monconn-forwarder --bin monconn-forwarder --example fwdbench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cp "$TARGET_DIR/release/monconn-forwarder" "$OUT/bin/forwarder" && cp "$TARGET_DIR/release/examples/fwdbench" "$OUT/bin/"

specs=("ours=$OUT/bin/forwarder --access-log off -p 127.0.0.1:\$LPORT=127.0.0.1:\$BPORT")
extra=()
if [ "$ENGINE" = 1 ]; then
    specs+=("engine=env FWD_SHARDS=$(nproc) $OUT/bin/fwdbench 127.0.0.1:\$LPORT=127.0.0.1:\$BPORT")
    extra+=(+engine)
fi
specs+=(haproxy haproxy-splice nginx socat rawfwd)
peers=(haproxy haproxy-splice nginx socat rawfwd)
# NGINX_HC=1: nginx with `proxy_half_close on` too, a peer that, like ours,
# passes one side's EOF on and lets the other direction go on.
if [ "${NGINX_HC:-0}" = 1 ]; then
    specs+=("nginx-hc=bash $ROOT/examples/forwarder/bench/nginx_half_close.sh")
    peers+=(nginx-hc)
fi
# socat forks a process per connection: too slow for the CPU phase's loads.
cpu_specs=()
for s in "${specs[@]}"; do [ "$s" = socat ] || cpu_specs+=("$s"); done

echo "results in $OUT" >&2
OUT=$OUT nice -n "$NICE" "$PEERS_DIR/measure.sh" "${specs[@]}" | tee "$OUT/measure.log"
if [ "$CPU" = 1 ]; then
    OUT=$OUT PEERS_DIR=$PEERS_DIR nice -n "$NICE" "$ROOT/examples/forwarder/bench/forwarder_cpu.sh" "${cpu_specs[@]}"
fi
python3 "$ROOT/examples/forwarder/bench/forwarder_ratios.py" "$OUT" ours ${extra[@]+"${extra[@]}"} "${peers[@]}" | tee "$OUT/ratios.md"
