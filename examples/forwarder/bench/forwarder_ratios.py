#!/usr/bin/env python3
"""forwarder_ratios.py OUT OURS [+EXTRA ...] PEER... -> markdown: the headline rows of
bench/forwarder.sh, median per forwarder, the best peer of the same run and
ours against it (>= 1.00 means at or above the best peer: for rates ours /
best, for costs best / ours). Reads OUT/raw.tsv (measure.sh) and, when
present, OUT/cpu.tsv (forwarder_cpu.sh). +EXTRA columns are shown but are
not peers (another build of ours, say).

A second table pairs the repetitions: in each, ours against the best peer
of the row (by median) in the same repetition, run minutes apart rather
than across the whole run; it gives the median of those ratios, their
range, and in how many repetitions ours was at or above that peer."""
import os
import statistics
import sys

# metric, label, higher is better
ROWS = [
    ("iperf_P1_Gbps", "iperf3 1 stream, Gbit/s", True),
    ("iperf_P4_Gbps", "iperf3 4 streams, Gbit/s", True),
    ("redis_P1_GET_ops", "redis GET, pipeline 1, ops/s", True),
    ("redis_P16_GET_ops", "redis GET, pipeline 16, ops/s", True),
    ("conn_rate_per_s", "short connections/s", True),
    ("mem_idle_RSS_B_per_conn", "RSS per idle connection, bytes", False),
    ("mem_after1B_RSS_B_per_conn", "RSS per connection after 1 byte each way, bytes", False),
    ("cpu_iperf_P1_ms_per_GB", "forwarder CPU per GB (iperf3 1 stream), ms", False),
    ("cpu_redis_P1_GET_us_per_op", "forwarder CPU per GET, pipeline 1, µs", False),
    ("cpu_redis_P16_GET_us_per_op", "forwarder CPU per GET, pipeline 16, µs", False),
    ("cpu_conn_us_per_conn", "forwarder CPU per short connection, µs", False),
]


def load(path, vals):
    if not os.path.exists(path):
        return
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4:
            continue
        peer, metric, rep, value = parts
        try:
            vals.setdefault((metric, peer), {})[rep] = float(value)
        except ValueError:
            pass  # NA: a failed run


def fmt(x):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else f"{x:.0f}"


def main():
    out, ours = sys.argv[1], sys.argv[2]
    extra = [a[1:] for a in sys.argv[3:] if a.startswith("+")]
    peers = [a for a in sys.argv[3:] if not a.startswith("+")]
    vals = {}
    load(os.path.join(out, "raw.tsv"), vals)
    load(os.path.join(out, "cpu.tsv"), vals)
    med = {k: statistics.median(v.values()) for k, v in vals.items() if v}
    cols = ["direct", ours] + extra + peers
    ratio_cols = [ours] + extra
    print("| metric | " + " | ".join(cols) + " | best peer | "
          + " | ".join(f"{c} / best" for c in ratio_cols) + " |")
    print("|---|" + "---|" * (len(cols) + 1 + len(ratio_cols)))
    for metric, label, higher in ROWS:
        if not any((metric, c) in med for c in cols):
            continue
        cells = [fmt(med.get((metric, c))) for c in cols]
        known = [(med[(metric, p)], p) for p in peers if (metric, p) in med]
        best = (max if higher else min)(known) if known else None
        ratios = []
        for c in ratio_cols:
            mine = med.get((metric, c))
            if best and mine:
                r = mine / best[0] if higher else best[0] / mine
                ratios.append(f"{r:.2f}")
            else:
                ratios.append("–")
        best_cell = f"{best[1]} {fmt(best[0])}" if best else "–"
        print(f"| {label} | " + " | ".join(cells) + f" | {best_cell} | " + " | ".join(ratios) + " |")
    paired(vals, med, ours, peers)


def paired(vals, med, ours, peers):
    """Per repetition, ours / the row's best peer (costs: peer / ours)."""
    print()
    print("| metric | best peer | paired ratio, median | min–max | ours at or above |")
    print("|---|---|---|---|---|")
    for metric, label, higher in ROWS:
        known = [(med[(metric, p)], p) for p in peers if (metric, p) in med]
        mine = vals.get((metric, ours), {})
        if not known or not mine:
            continue
        peer = (max if higher else min)(known)[1]
        theirs = vals[(metric, peer)]
        reps = sorted(set(mine) & set(theirs), key=lambda r: (len(r), r))
        rs = [mine[r] / theirs[r] if higher else theirs[r] / mine[r]
              for r in reps if mine[r] and theirs[r]]
        if not rs:
            continue
        ahead = sum(r >= 1 for r in rs)
        print(f"| {label} | {peer} | {statistics.median(rs):.2f} | "
              f"{min(rs):.2f}–{max(rs):.2f} | {ahead} of {len(rs)} |")


if __name__ == "__main__":
    main()
