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
