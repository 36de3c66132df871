#!/usr/bin/env bash
# Where a forwarder's CPU goes per short connection: `perf record` (the
# cpu-clock event at 4 kHz, so it works in VMs without hardware counters)
# on each variant's processes while `connrate` runs through it to
# `echod once`, then kernel and user time per connection, the user time by
# group (tokio, monconn, the allocator, the rest) and its top symbols.
# Reproduces the user-space figures of BENCHMARKS.md, "Short connections".
#
#   bash examples/forwarder/bench/profile.sh                       # VARIANTS="ours nginx-hc" SECS=4
#   BASE_BIN=/path/to/forwarder VARIANTS="ours base" bash examples/forwarder/bench/profile.sh
#
# Variants as bench/lib.sh's fwd_spec names them. Needs perf (linux-perf).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench}
TOOLS=$PEERS_DIR/peertools/target/release
SECS=${SECS:-4} WORKERS=${WORKERS:-64} VARIANTS=${VARIANTS:-ours nginx-hc} TOP=${TOP:-12}
LPORT=${LPORT:-19000} BPORT=${BPORT:-19001}

source "$PEERS_DIR/forwarders.sh"
source "$ROOT/examples/forwarder/bench/lib.sh"
start_echod_once profile

for v in $VARIANTS; do
    fwd_start "$(fwd_spec "$v" "$STAGED")" "$LPORT" "$BPORT" 2>/dev/null || exit 1
    pid=$FWD_PID
    sleep 0.5
    perf record -q -e cpu-clock -F 4000 -p "$(tree_pids "$pid" | paste -sd,)" -o "$STAGED/$v.data" -- sleep "$SECS" 2>/dev/null &
    rec=$!
    out=$("$TOOLS/connrate" "127.0.0.1:$LPORT" "$WORKERS" "$SECS")
    wait "$rec" || true
    fwd_stop "$pid" >/dev/null 2>&1 || true # HAProxy exits 143 on SIGTERM
    conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
    echo "$v: $out"
    perf report -i "$STAGED/$v.data" --no-children --sort sym -q -g none -F sample,sym 2>/dev/null |
        python3 -c '
import sys
conns, top = int(sys.argv[1]), int(sys.argv[2])
us = lambda samples: samples * 250 / conns  # a sample is 250 us of CPU
kernel, user, groups = 0.0, [], {}
for line in sys.stdin:
    parts = line.split(None, 1)
    if len(parts) < 2 or not parts[0].isdigit():
        continue
    t, sym = us(int(parts[0])), parts[1].strip()
    if sym.startswith("[k]"):
        kernel += t
        continue
    user.append((t, sym))
    group = next((g for g, keys in (("tokio", ("tokio",)), ("monconn", ("monconn",)),
        ("allocator", ("malloc", "free", "memalign", "unlink_chunk", "consolidate", "mi_")))
        if any(k in sym for k in keys)), "other")
    groups[group] = groups.get(group, 0.0) + t
print("  per connection: kernel %.1f us, user %.1f us (%s)" % (kernel, sum(t for t, _ in user),
    ", ".join("%s %.2f" % g for g in sorted(groups.items(), key=lambda g: -g[1]))))
for t, sym in sorted(user, reverse=True)[:top]:
    print("    %5.2f us  %s" % (t, sym[:110]))
' "$conns" "$TOP"
    sleep 0.5
done
