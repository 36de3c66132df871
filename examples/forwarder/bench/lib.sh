# lib.sh: helpers shared by the bench scripts. Source it after
# ../shared/bench/forwarders.sh (ticks needs its tree_pids).

# CPU ticks (1/100 s) of a process tree, user + system, children already
# reaped included.
ticks() {
	local p
	for p in $(tree_pids "$1"); do
		awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null
	done | awk '{s += $1} END {print s + 0}'
}

# Prepares an A/B run: the peers (../shared/bench/setup.sh), then the
# forwarder built (release, feature metrics) and copied into a new temporary
# directory named after NAME, so that a rebuild during the run cannot change
# it; BASE_BIN, when set, beside it as base-forwarder (an earlier build, for
# A/B of a change). Prints the directory:
#   BIN=$(stage_forwarder redis-ab) || exit 1
stage_forwarder() {
	local dir
	"$PEERS_DIR/setup.sh" >/dev/null || return 1
	cargo build -q --release -p monconn-forwarder --bin monconn-forwarder || return 1
	dir=$(mktemp -d -t "$1.XXXXXX") || return 1
	cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/monconn-forwarder" "$dir/forwarder" || return 1
	if [ -n "${BASE_BIN:-}" ]; then cp "$BASE_BIN" "$dir/base-forwarder" || return 1; fi
	echo "$dir"
}

# Prepares a short-connection run: the forwarder staged as NAME (see
# stage_forwarder) in STAGED, and `echod once` (from TOOLS) on
# 127.0.0.1:BPORT, which echoes a client's first bytes and closes first;
# ECHOD is its PID. Both go when the script exits:
#   start_echod_once syscalls
start_echod_once() {
	STAGED=$(stage_forwarder "$1") || exit 1
	"$TOOLS/echod" "127.0.0.1:$BPORT" once >/dev/null 2>&1 &
	ECHOD=$!
	trap 'kill $ECHOD 2>/dev/null; rm -rf "$STAGED"' EXIT
	sleep 0.3
}

# The variants of repetition REP (from 1), one per line, in an order that
# turns every repetition, so that no variant always runs first:
#   for v in $(rotated "$rep" $VARIANTS); do ...
rotated() {
	local rep=$1 i k
	shift
	for ((i = 0; i < $#; i++)); do
		k=$(((i + rep - 1) % $# + 1))
		echo "${!k}"
	done
}

# The median of the numbers on standard input, one per line:
#   printf '%s\n' 3 1 2 | median   # 2
median() {
	sort -n | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'
}

# The forwarders.sh SPEC of VARIANT, for a forwarder staged in BIN (see
# stage_forwarder): ours = the defaults, shared = --accept shared, one =
# --threads 1, splice = --splice, nohc = a config with `half_close: false`,
# base = BIN/base-forwarder (BASE_BIN) with the same flags as ours,
# base-copy = the same with FORWARDER_SPLICE=off (builds before 254b122
# spliced by default), nginx-hc = nginx stream with proxy_half_close on
# (bench/nginx_half_close.sh); any other name is passed on as it is (a
# builtin).
#   fwd_start "$(fwd_spec "$v" "$BIN")" "$LPORT" "$BPORT"
fwd_spec() {
	# The access log off: the peers log nothing per connection either.
	local map="--access-log off -p 127.0.0.1:\$LPORT=127.0.0.1:\$BPORT"
	case $1 in
	ours) echo "ours=$2/forwarder $map" ;;
	shared) echo "shared=$2/forwarder --accept shared $map" ;;
	one) echo "one=$2/forwarder --threads 1 $map" ;;
	splice) echo "splice=$2/forwarder --splice $map" ;;
	base) echo "base=$2/base-forwarder $map" ;;
	base-copy) echo "base-copy=env FORWARDER_SPLICE=off $2/base-forwarder -p 127.0.0.1:\$LPORT=127.0.0.1:\$BPORT" ;;
	nohc) echo "nohc=sh -c 'echo \"{svc: {listen_ip: 127.0.0.1, listen_port: \$LPORT, backend_port: \$BPORT, half_close: false}}\" >nohc.yaml && exec $2/forwarder --access-log off -c nohc.yaml'" ;;
	nginx-hc) echo "nginx-hc=bash $ROOT/examples/forwarder/bench/nginx_half_close.sh" ;;
	*) echo "$1" ;;
	esac
}

# One iperf3 run of SECS seconds with P streams to 127.0.0.1:PORT, while
# the process tree PID forwards: prints "VARIANT REP gbps=G cpu_ms_per_gb=C".
#   line=$(iperf_run "$v" "$rep" "$LPORT" "$FWD_PID")
iperf_run() {
	local v=$1 rep=$2 port=$3 pid=$4 c0 c1 gbps
	c0=$(ticks "$pid")
	gbps=$(iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -P "$P" -J |
		python3 -c 'import json, sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))')
	c1=$(ticks "$pid")
	awk -v v="$v" -v r="$rep" -v g="$gbps" -v c=$((c1 - c0)) -v t="$(getconf CLK_TCK)" -v s="$SECS" \
		'BEGIN { printf "%s %s gbps=%s cpu_ms_per_gb=%.0f\n", v, r, g, c / t * 1000 / (g * s / 8) }'
}
