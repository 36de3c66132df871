#!/usr/bin/env bash
# forwarder_cpu.sh SPEC... : each forwarder's own CPU time (user + system, its
# whole process tree, reaped children included) per unit of work, from
# /proc/PID/stat around each run. SPECs as for measure.sh (a builtin of
# forwarders.sh, or 'NAME=COMMAND' with $LPORT and $BPORT). Runs alternate
# between the forwarders, REPS times:
#   cpu_iperf_P1_ms_per_GB      iperf3, 1 stream, IPERF_SECS (default 3) s
#   cpu_redis_P1_GET_us_per_op  redis-benchmark GET, 50 clients, pipeline 1, 50,000 requests
#   cpu_redis_P16_GET_us_per_op the same, pipeline 16, 500,000 requests
#   cpu_conn_us_per_conn        peertools connrate, 64 workers, RATE_SECS (default 3) s
# Appends "peer metric rep value" lines to $OUT/cpu.tsv. Called by forwarder.sh.
set -u
PEERS_DIR=${PEERS_DIR:?set PEERS_DIR to ../shared/bench}
source "$PEERS_DIR/forwarders.sh"
TOOLS=$PEERS_DIR/peertools/target/release
OUT=${OUT:?set OUT}
REPS=${REPS:-3}
IPERF_SECS=${IPERF_SECS_CPU:-3}
RATE_SECS=${RATE_SECS_CPU:-3}
R_PORT=16579 I_PORT=15601 E_PORT=17308
TSV=$OUT/cpu.tsv

declare -A LIVE=()
cleanup() { local p; for p in "${!LIVE[@]}"; do fwd_stop "$p"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

redis-server --bind 127.0.0.1 --port $R_PORT --save "" --appendonly no >/dev/null 2>&1 &
LIVE[$!]=1
iperf3 -s -B 127.0.0.1 -p $I_PORT >/dev/null 2>&1 &
LIVE[$!]=1
"$TOOLS/echod" "127.0.0.1:$E_PORT" once >/dev/null 2>&1 &
LIVE[$!]=1
wait_listen $R_PORT && wait_listen $I_PORT && wait_listen $E_PORT

source "$(dirname "$0")/lib.sh"
record() { printf '%s\t%s\t%s\t%s\n' "$@" | tee -a "$TSV"; }

declare -A PR PI PE
names=()
i=0
for s in "$@"; do
	i=$((i + 1))
	n=$(fwd_name "$s")
	names+=("$n")
	fwd_start "$s" $((25000 + i)) $R_PORT && PR[$n]=$FWD_PID && LIVE[$FWD_PID]=1
	fwd_start "$s" $((25100 + i)) $I_PORT && PI[$n]=$FWD_PID && LIVE[$FWD_PID]=1
	fwd_start "$s" $((25200 + i)) $E_PORT && PE[$n]=$FWD_PID && LIVE[$FWD_PID]=1
done

for rep in $(seq "$REPS"); do
	i=0
	for n in "${names[@]}"; do
		i=$((i + 1))
		a=$(ticks "${PI[$n]}")
		bytes=$(timeout $((IPERF_SECS + 20)) iperf3 -c 127.0.0.1 -p $((25100 + i)) -t "$IPERF_SECS" -J |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bytes"])' 2>/dev/null)
		b=$(ticks "${PI[$n]}")
		[ -n "$bytes" ] && record "$n" cpu_iperf_P1_ms_per_GB "$rep" $(((b - a) * 10 * 1000000000 / bytes))

		a=$(ticks "${PR[$n]}")
		timeout 120 redis-benchmark -h 127.0.0.1 -p $((25000 + i)) -t get -n 50000 -c 50 -P 1 >/dev/null 2>&1
		b=$(ticks "${PR[$n]}")
		timeout 120 redis-benchmark -h 127.0.0.1 -p $((25000 + i)) -t get -n 500000 -c 50 -P 16 >/dev/null 2>&1
		c=$(ticks "${PR[$n]}")
		record "$n" cpu_redis_P1_GET_us_per_op "$rep" "$(python3 -c "print(round(($b - $a) * 10000 / 50000, 1))")"
		record "$n" cpu_redis_P16_GET_us_per_op "$rep" "$(python3 -c "print(round(($c - $b) * 10000 / 500000, 2))")"

		a=$(ticks "${PE[$n]}")
		out=$(timeout $((RATE_SECS + 30)) "$TOOLS/connrate" "127.0.0.1:$((25200 + i))" 64 "$RATE_SECS")
		b=$(ticks "${PE[$n]}")
		conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
		[ "${conns:-0}" -gt 0 ] && record "$n" cpu_conn_us_per_conn "$rep" $(((b - a) * 10000 / conns))
	done
done
