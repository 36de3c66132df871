#!/usr/bin/env bash
# redis-benchmark GETs through the forwarder and peers, interleaved A/B, with
# each forwarder's CPU time and voluntary context switches per request (from
# /proc around each run). Reproduces the redis figures of BENCHMARKS.md,
# "--accept shared".
#
#   bash examples/forwarder/bench/redis_ab.sh               # P=1 N=200000 REPS=3 VARIANTS="ours haproxy nginx"
#   P=16 N=2000000 VARIANTS="ours shared haproxy haproxy-splice nginx" bash examples/forwarder/bench/redis_ab.sh
#   STRACE=1 bash examples/forwarder/bench/redis_ab.sh      # system calls per request instead (strace -c)
#   BASE_BIN=/path/to/forwarder VARIANTS="ours base" bash examples/forwarder/bench/redis_ab.sh
#
# ours = the forwarder's defaults, shared = --accept shared, one = --threads 1,
# base = the forwarder binary BASE_BIN (an earlier build: A/B of a change),
# direct = no forwarder (redis-benchmark against redis-server);
# other names are ../shared/bench/forwarders.sh builtins. NICE=-15 runs the
# client at that priority (the forwarders and redis-server stay at 0).
set -uo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
P=${P:-1} N=${N:-200000} REPS=${REPS:-3} NICE=${NICE:-0} STRACE=${STRACE:-0}
VARIANTS=${VARIANTS:-ours haproxy nginx}
LPORT=${LPORT:-19000} BPORT=${BPORT:-16380}

source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
BIN=$(stage_forwarder redis-ab) || exit 1
redis-server --bind 127.0.0.1 --port "$BPORT" --save "" --appendonly no >/dev/null 2>&1 &
REDIS=$!
trap 'kill $REDIS 2>/dev/null; rm -rf "$BIN"' EXIT
sleep 0.5
TCK=$(getconf CLK_TCK)

csw() { # PIDS -> voluntary context switches of all their threads
    local p f t=0
    for p in "$@"; do
        for f in /proc/"$p"/task/*/status; do
            [ -r "$f" ] && t=$((t + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$f")))
        done
    done
    echo "$t"
}

for rep in $(seq "$REPS"); do
    for v in $(rotated "$rep" $VARIANTS); do
        port=$LPORT pid=$REDIS
        if [ "$v" = direct ]; then
            port=$BPORT # no forwarder: the CPU figures are redis-server's
        else
            fwd_start "$(fwd_spec "$v" "$BIN")" "$LPORT" "$BPORT" 2>/dev/null || exit 1
            pid=$FWD_PID
        fi
        sleep 0.3
        pids=$(tree_pids "$pid")
        if [ "$STRACE" = 1 ]; then
            attach=()
            for p in $pids; do for t in /proc/"$p"/task/*; do attach+=(-p "${t##*/}"); done; done
            strace -c -f "${attach[@]}" -o "$BIN/strace" 2>/dev/null &
            tracer=$!
            sleep 0.5
        fi
        c0=$(ticks "$pid") s0=$(csw $pids)
        rate=$(nice -n "$NICE" redis-benchmark -h 127.0.0.1 -p "$port" -t get -n "$N" -c 50 -P "$P" --csv 2>/dev/null |
            tail -1 | cut -d, -f2 | tr -d '"')
        c1=$(ticks "$pid") s1=$(csw $pids)
        awk -v v="$v" -v r="$rep" -v rate="$rate" -v c=$((c1 - c0)) -v s=$((s1 - s0)) -v n="$N" -v tck="$TCK" \
            'BEGIN { printf "%s %s rate=%s cpu_us_per_req=%.2f csw_per_req=%.3f\n", v, r, rate, c * 1e6 / tck / n, s / n }'
        if [ "$STRACE" = 1 ]; then
            kill -INT "$tracer"
            wait "$tracer" 2>/dev/null
            awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
                printf "  %-14s %6.3f per request\n", $NF, $4 / n }' "$BIN/strace"
        fi
        [ "$v" = direct ] || fwd_stop "$pid" >/dev/null 2>&1 || true # HAProxy exits 143 on SIGTERM
        sleep 0.5
    done
done
