#!/usr/bin/env bash
# Where a short connection's CPU goes, the forwarder against nginx stream:
# each variant forwards `connrate`'s short connections to `echod once` while
# `perf stat` counts its CPU time (all its processes and threads) and
# `perf record -g` samples it. Prints, per variant, the CPU time per
# connection split into user space, each system call (the kernel time under
# its entry point, TCP processing of loopback packets included) and the
# rest (scheduling, interrupts), in microseconds; the medians over REPS
# interleaved repetitions. Reproduces the table of BENCHMARKS.md,
# "Short connections: where the time goes". Needs perf; run as root.
#
#   bash examples/forwarder/bench/syscall_cpu.sh              # REPS=3 SECS=4 WORKERS=64
#   VARIANTS="ours nginx" REPS=5 bash examples/forwarder/bench/syscall_cpu.sh
#
# Variants as bench/lib.sh's fwd_spec names them: ours, nohc (`half_close:
# false`), nginx (its default, no half-close), nginx-hc (proxy_half_close on).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
TOOLS=$PEERS_DIR/peertools/target/release
REPS=${REPS:-3} SECS=${SECS:-4} WORKERS=${WORKERS:-64}
VARIANTS=${VARIANTS:-ours nohc nginx nginx-hc}
LPORT=${LPORT:-19000} BPORT=${BPORT:-19001}
SYSCALLS="accept4 socket connect getsockopt setsockopt ioctl recvfrom sendto writev shutdown close epoll_ctl epoll_wait"

source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
start_echod_once syscall-cpu

# One line for a run: "VARIANT conns=N rate=R cpu=µs user=µs SYSCALL=µs ... other=µs".
measure() { # VARIANT REP
	local v=$1 dir=$STAGED/$1.$2 pid pids out conns task
	mkdir -p "$dir"
	fwd_start "$(fwd_spec "$v" "$STAGED")" "$LPORT" "$BPORT" 2>/dev/null || return 1
	pid=$FWD_PID
	pids=$(tree_pids "$pid" | paste -sd,)
	perf stat -x, -e task-clock -p "$pids" -o "$dir/stat" -- sleep "$SECS" &
	local stat=$!
	perf record -q -g -F 999 -p "$pids" -o "$dir/perf.data" -- sleep "$SECS" 2>/dev/null &
	local record=$!
	sleep 0.1
	out=$("$TOOLS/connrate" "127.0.0.1:$LPORT" "$WORKERS" "$((SECS - 1))")
	wait "$stat" "$record" || true
	fwd_stop "$pid" >/dev/null 2>&1 || true # HAProxy exits 143 on SIGTERM
	# The perf window (SECS) holds all of connrate's run (SECS - 1) and idle
	# time around it: the CPU it counts is that of connrate's connections.
	conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
	task=$(awk -F, '$3 == "task-clock" {print $1}' "$dir/stat") # ms
	perf report -i "$dir/perf.data" --children --sort sym -g none --stdio 2>/dev/null >"$dir/children"
	perf report -i "$dir/perf.data" --no-children --sort dso -g none --stdio 2>/dev/null >"$dir/dso"
	awk -v v="$v" -v conns="$conns" -v task="$task" -v out="$out" -v calls="$SYSCALLS" '
		FNR == 1 { file++ }
		file == 1 && $NF ~ /^__x64_sys_/ { pct[substr($NF, 11)] += $1 + 0 }
		# writev has no __x64_sys_writev frame of its own in these kernels
		file == 1 && $NF == "do_writev" { pct["writev"] += $1 + 0 }
		file == 2 && $2 == "[kernel.kallsyms]" { kernel += $1 + 0 }
		END {
			us = task * 1000 / conns
			rate = out; sub(/.*rate=/, "", rate)
			line = sprintf("%s conns=%d rate=%s cpu=%.1f user=%.2f", v, conns, rate, us, us * (100 - kernel) / 100)
			n = split(calls, c, " ")
			for (i = 1; i <= n; i++) { line = line sprintf(" %s=%.2f", c[i], us * pct[c[i]] / 100); sys += pct[c[i]] }
			print line sprintf(" other=%.2f", us * (kernel - sys) / 100)
		}' "$dir/children" "$dir/dso"
	rm -rf "$dir"
}

lines=()
for rep in $(seq "$REPS"); do
	for v in $(rotated "$rep" $VARIANTS); do
		line=$(measure "$v" "$rep")
		echo "$rep $line"
		lines+=("$line")
		sleep 0.5
	done
done

echo
echo "medians over $REPS repetitions, µs of CPU per connection:"
printf '%-12s' field
for v in $VARIANTS; do printf '%10s' "$v"; done
echo
for f in rate cpu user $SYSCALLS other; do
	printf '%-12s' "$f"
	for v in $VARIANTS; do
		printf '%10s' "$(printf '%s\n' "${lines[@]}" | awk -v v="$v" '$1 == v' |
			tr ' ' '\n' | sed -n "s/^$f=//p" | median)"
	done
	echo
done
