# lib.sh: helpers shared by the bench scripts. Source it after
# ../shared/bench/forwarders.sh (for tree_pids).

# CPU ticks (1/100 s) of a process tree, user + system, children already
# reaped included.
ticks() {
	local p
	for p in $(tree_pids "$1"); do
		awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null
	done | awk '{s += $1} END {print s + 0}'
}

# Builds the forwarder (release, feature metrics) and copies it into DIR, so
# that a rebuild during the run cannot change it; BASE_BIN, when set, beside
# it as DIR/base-forwarder (an earlier build, for A/B of a change).
stage_forwarder() {
	cargo build -q --release --features metrics --example forwarder
	cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/forwarder" "$1/"
	if [ -n "${BASE_BIN:-}" ]; then cp "$BASE_BIN" "$1/base-forwarder"; fi
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
