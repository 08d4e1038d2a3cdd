#!/usr/bin/env python3
"""Turns benchmark results into the markdown tables and SVG plots of docs/.

Usage:
  python3 benches/plot.py criterion [target/criterion] [docs/bench]
  python3 benches/plot.py service [docs/bench/results] [docs/bench]
  python3 benches/plot.py cluster [docs/bench/cluster-results] [docs/bench]

`criterion` (docs/benchmarks.md) reads every `<group>/<member>/new/{benchmark,estimates}.json`
under the criterion directory, computes each member's throughput and its ratio to the group's
raw baseline (the member whose name starts with `raw_`; when a group has several, the one with
the same parameter), prints a markdown table per group, and writes `<group>.svg`.

`service` (docs/bench/service.md) reads every `<name>.json` that `ringlog-bench --json` wrote,
prints a markdown table row per measurement (records/s, MB/s, latency percentiles, ratio to
bare tonic of the same repetition) and writes `service-<name>.svg`.

`cluster` (docs/benchmarks.md, Cluster) reads what docs/bench/cluster.sh wrote: throughput
runs of `--server compare` (bare tonic, one node process, the 3-node cluster; a table row each
with the ratios to bare and to the node and the servers' CPU-µs per record; `cluster-<name>.svg`),
`ringlog-bench failover` reports (the distribution of failover times per election setting, all
in `cluster-failover.svg`) and `ringlog-bench catch-up` reports (a line of figures).

Both plots are the same shape: one bar per member, the baseline grey and the rest blue, each
labelled with its rate and its ratio to the baseline; service plots add latency percentiles on
a log scale when latencies were measured. Standard library only, so it runs anywhere.
"""
import json
import math
import os
import sys
from html import escape

WIDTH, BAR_H = 760, 22
BASELINE, MEASURED = "#888", "#3b7dd8"
PERCENTILES = ("p50", "p90", "p99", "p99_9", "max")


def human(value, unit):
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f} {suffix}{unit}"
    return f"{value:.1f} {unit}"


def bar_rows(title, bars, label_w, text_room):
    """The title and one bar per `(label, value, colour, text)`, scaled to the largest value."""
    top = max(value for _, value, _, _ in bars) or 1
    rows = [f'<text x="10" y="22" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, (label, value, colour, text) in enumerate(bars):
        y = 32 + i * BAR_H
        w = (WIDTH - label_w - text_room) * value / top
        rows.append(f'<text x="10" y="{y + 15}" font-size="12">{escape(label)}</text>')
        rows.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{BAR_H - 6}" fill="{colour}"/>')
        rows.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="11">{escape(text)}</text>')
    return rows


def write_svg(path, height, rows):
    body = "\n".join(rows)
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
                f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


# criterion: the engine's storage strategies against a raw baseline

def load_criterion(root):
    groups = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in filenames:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            estimates = json.load(f)
        seconds = estimates["mean"]["point_estimate"] / 1e9
        throughput = bench.get("throughput") or {}
        unit, amount = next(iter(throughput.items()), ("Iterations", 1))
        groups.setdefault(bench["group_id"], []).append({
            "function": bench.get("function_id") or "",
            "parameter": bench.get("value_str") or "",
            "per_second": amount / seconds if seconds else 0.0,
            "unit": {"Elements": "records/s", "Bytes": "bytes/s"}.get(unit, "iter/s"),
            "seconds": seconds,
        })
    return groups


def member_name(member):
    return "/".join(p for p in (member["function"], member["parameter"]) if p)


def raw_baseline(members, member):
    raws = [m for m in members if m["function"].startswith("raw_")]
    if not raws:
        return None
    same = [m for m in raws if m["parameter"] == member["parameter"]]
    return (same or raws)[0]


def criterion_svg(group, members, path):
    bars = []
    for m in members:
        base = raw_baseline(members, m)
        ratio = f' ({m["per_second"] / base["per_second"]:.0%} of raw)' if base and base is not m else ""
        colour = BASELINE if m["function"].startswith("raw_") else MEASURED
        bars.append((member_name(m), m["per_second"], colour, human(m["per_second"], m["unit"]) + ratio))
    write_svg(path, 40 + BAR_H * len(members), bar_rows(group, bars, label_w=330, text_room=150))


def criterion(root="target/criterion", out="docs/bench"):
    os.makedirs(out, exist_ok=True)
    for group, members in sorted(load_criterion(root).items()):
        members.sort(key=lambda m: (not m["function"].startswith("raw_"), m["function"], m["parameter"]))
        print(f"\n### {group}\n\n![{group}](bench/{group}.svg)\n")
        print("| member | throughput | ratio to raw baseline |\n|---|---|---|")
        for m in members:
            base = raw_baseline(members, m)
            ratio = f'{m["per_second"] / base["per_second"]:.2f}' if base else "-"
            print(f'| {member_name(m)} | {human(m["per_second"], m["unit"])} | {ratio} |')
        criterion_svg(group, members, os.path.join(out, f"{group}.svg"))


# service: ringlog-bench runs against bare tonic

def bare_rate(runs, run, baseline="bare"):
    for other in runs:
        if other["server"] == baseline and other["repeat"] == run["repeat"]:
            return other["records_per_s"]
    return None


def latency_of(run):
    return run.get("delivery_latency_us") or run.get("latency_us")


def latency_rows(runs, label_w, y0):
    """Each run's latency percentiles on one log-scale axis, below the bars."""
    kind = "append-to-delivery" if runs[0].get("delivery_latency_us") else "acknowledgement"
    rows = [f'<text x="10" y="{y0 + 12}" font-size="12" font-weight="bold">'
            f'{kind} latency per record, µs (log scale)</text>']
    lo = min(latency_of(r)["p50"] for r in runs) or 1
    hi = max(latency_of(r)["max"] for r in runs) or 1
    lo, hi = math.log10(max(lo, 1) / 2), math.log10(hi * 2)
    x0, x1 = label_w, WIDTH - 20
    xs = lambda v: x0 + (x1 - x0) * (math.log10(max(v, 1)) - lo) / (hi - lo or 1)
    for decade in range(math.ceil(lo), math.floor(hi) + 1):
        x = xs(10 ** decade)
        rows.append(f'<line x1="{x:.1f}" y1="{y0 + 20}" x2="{x:.1f}" y2="{y0 + 30 + 18 * len(runs)}" stroke="#ddd"/>')
        rows.append(f'<text x="{x:.1f}" y="{y0 + 44 + 18 * len(runs)}" font-size="10" text-anchor="middle">'
                    f'{10 ** decade:g}</text>')
    for i, r in enumerate(runs):
        y = y0 + 32 + 18 * i
        p = latency_of(r)
        colour = BASELINE if r["server"] == "bare" else MEASURED
        rows.append(f'<text x="10" y="{y + 4}" font-size="12">{escape(r["server"])} #{r["repeat"]}</text>')
        rows.append(f'<line x1="{xs(p["p50"]):.1f}" y1="{y}" x2="{xs(p["max"]):.1f}" y2="{y}" stroke="{colour}"/>')
        for name in PERCENTILES:
            rows.append(f'<circle cx="{xs(p[name]):.1f}" cy="{y}" r="3" fill="{colour}">'
                        f'<title>{name} {p[name]:.0f} µs</title></circle>')
        rows.append(f'<text x="{xs(p["p99"]):.1f}" y="{y - 5}" font-size="9" text-anchor="middle">'
                    f'p99 {p["p99"]:.0f}</text>')
    return rows


def service_svg(title, runs, path):
    label_w = 150
    bars = []
    for r in runs:
        base = bare_rate(runs, r)
        ratio = f' ({r["records_per_s"] / base:.0%} of bare)' if base and r["server"] != "bare" else ""
        node = bare_rate(runs, r, "node")
        if node and r["server"] == "cluster":
            ratio = ratio[:-1] + f', {r["records_per_s"] / node:.0%} of node)'
        colour = BASELINE if r["server"] == "bare" else MEASURED
        text = f'{human(r["records_per_s"], "records/s")}, {r["mb_per_s"]:.0f} MB/s{ratio}'
        if r.get("server_cpu_us_per_record") is not None:
            text += f', {r["server_cpu_us_per_record"]:.2f} CPU-µs/record'
        bars.append((f'{r["server"]} #{r["repeat"]}', r["records_per_s"], colour, text))
    rows = bar_rows(title, bars, label_w, text_room=330 if any(r.get("server_cpu_s") for r in runs) else 230)
    lat_runs = [r for r in runs if latency_of(r)]
    if lat_runs:
        rows += latency_rows(lat_runs, label_w, y0=40 + BAR_H * len(runs) + 10)
    lat_h = (60 + 18 * len(lat_runs)) if lat_runs else 0
    write_svg(path, 40 + BAR_H * len(runs) + lat_h, rows)


def service(results="docs/bench/results", out="docs/bench"):
    os.makedirs(out, exist_ok=True)
    print("| run | server | records/s | MB/s | ratio to bare | p50 µs | p99 µs | p99.9 µs | max µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for file in sorted(os.listdir(results)):
        if not file.endswith(".json"):
            continue
        with open(os.path.join(results, file)) as f:
            report = json.load(f)
        name = file[:-len(".json")]
        runs = report["runs"]
        for r in runs:
            base = bare_rate(runs, r)
            ratio = f'{r["records_per_s"] / base:.2f}' if base and r["server"] != "bare" else "-"
            p = latency_of(r) or {}
            cells = [f'{p[k]:.0f}' if k in p else "-" for k in ("p50", "p99", "p99_9", "max")]
            print(f'| {name} | {r["server"]} #{r["repeat"]} | {r["records_per_s"]:.0f} | {r["mb_per_s"]:.1f} | '
                  f'{ratio} | ' + " | ".join(cells) + " |")
        s = report["settings"]
        title = (f'{name}: {s["workload"]}, {s["record_bytes"]} B, {s["connections"]}x{s["streams"]} streams'
                 + (f', {s["rate"]} records/s' if s.get("rate") else ""))
        service_svg(title, runs, os.path.join(out, f"service-{name}.svg"))


# cluster: processes (one node, three nodes) against bare tonic; failover; catch-up

def failover_svg(reports, path):
    """One row per election setting: a dot per kill, ticks at p50 and p90, on a linear axis."""
    label_w, row_h = 210, 56
    hi = max(c["failover_ms"] for _, r in reports for c in r["cycles"]) * 1.1
    x0, x1 = label_w, WIDTH - 20
    xs = lambda v: x0 + (x1 - x0) * v / hi
    rows = ['<text x="10" y="22" font-size="14" font-weight="bold">'
            'Failover: SIGKILL of the leader to the next acknowledged produce (ms), one dot per kill</text>']
    step = 500 if hi > 2000 else 250
    bottom = 40 + row_h * len(reports)
    for tick in range(0, int(hi) + 1, step):
        rows.append(f'<line x1="{xs(tick):.1f}" y1="34" x2="{xs(tick):.1f}" y2="{bottom}" stroke="#ddd"/>')
        rows.append(f'<text x="{xs(tick):.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle">{tick}</text>')
    for i, (name, r) in enumerate(reports):
        s, d = r["settings"], r["failover_ms"]
        y = 40 + row_h * i + row_h / 2
        rows.append(f'<text x="10" y="{y - 4}" font-size="12">heartbeat {s["raft_heartbeat_ms"]} ms,</text>')
        rows.append(f'<text x="10" y="{y + 10}" font-size="12">election timeout {s["raft_election_timeout_ms"]} ms</text>')
        for c in r["cycles"]:
            rows.append(f'<circle cx="{xs(c["failover_ms"]):.1f}" cy="{y}" r="4" fill="{MEASURED}" fill-opacity="0.5">'
                        f'<title>{c["failover_ms"]:.0f} ms</title></circle>')
        for label, text_y in (("p50", y - 14), ("p90", y + 21)):
            x = xs(d[label])
            rows.append(f'<line x1="{x:.1f}" y1="{y - 12}" x2="{x:.1f}" y2="{y + 12}" stroke="black"/>')
            rows.append(f'<text x="{x:.1f}" y="{text_y}" font-size="9" text-anchor="middle">{label} {d[label]:.0f}</text>')
    write_svg(path, bottom + 24, rows)


def cluster(results="docs/bench/cluster-results", out="docs/bench"):
    os.makedirs(out, exist_ok=True)
    reports = []
    for file in sorted(os.listdir(results)):
        if file.endswith(".json"):
            with open(os.path.join(results, file)) as f:
                reports.append((file[:-len(".json")], json.load(f)))
    print("| run | server | records/s | MB/s | ratio to bare | ratio to node | server CPU-µs/record | p50 µs | p99 µs | max µs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, report in reports:
        runs = report.get("runs")
        if not runs:
            continue
        for r in runs:
            base, node = bare_rate(runs, r), bare_rate(runs, r, "node")
            to_bare = f'{r["records_per_s"] / base:.2f}' if base and r["server"] != "bare" else "-"
            to_node = f'{r["records_per_s"] / node:.2f}' if node and r["server"] == "cluster" else "-"
            cpu = r.get("server_cpu_us_per_record")
            p = latency_of(r) or {}
            cells = [f'{p[k]:.0f}' if k in p else "-" for k in ("p50", "p99", "max")]
            print(f'| {name} | {r["server"]} #{r["repeat"]} | {r["records_per_s"]:.0f} | {r["mb_per_s"]:.1f} | '
                  f'{to_bare} | {to_node} | {"-" if cpu is None else f"{cpu:.2f}"} | ' + " | ".join(cells) + " |")
        s = report["settings"]
        title = (f'{name}: {s["workload"]}, {s["record_bytes"]} B, {s["connections"]}x{s["streams"]} streams, '
                 f'durability {s["durability"]}' + (f', {s["rate"]} records/s' if s.get("rate") else ""))
        service_svg(title, runs, os.path.join(out, f"cluster-{name}.svg"))
    failovers = [(n, r) for n, r in reports if "cycles" in r]
    if failovers:
        print("\n| election setting | kills | failover ms min / p50 / p90 / max | leader known ms p50 | records acknowledged |")
        print("|---|---|---|---|---|")
        for name, r in failovers:
            s, d, k = r["settings"], r["failover_ms"], r["leader_known_ms"]
            print(f'| heartbeat {s["raft_heartbeat_ms"]} ms, election timeout {s["raft_election_timeout_ms"]} ms | '
                  f'{len(r["cycles"])} | {d["min"]:.0f} / {d["p50"]:.0f} / {d["p90"]:.0f} / {d["max"]:.0f} | '
                  f'{k["p50"]:.0f} | {r["acknowledged"]} |')
        failover_svg(failovers, os.path.join(out, "cluster-failover.svg"))
    for name, r in reports:
        if "progress" in r:
            snapshot = r.get("snapshot_bytes")
            rates = (f'{r["received_mb_per_s"]:.1f} MB/s of segment files ({r["received_bytes"] / 1e6:.0f} MB, '
                     f'{snapshot / 1e6:.0f} MB of them by a snapshot)' if snapshot else
                     f'{r["value_mb_per_s"]:.1f} MB/s of values, {r["received_mb_per_s"]:.1f} MB/s of segment files')
            print(f'\n{name}: {r["records"]} records, {r["value_bytes"] / 1e6:.0f} MB of values; caught up in '
                  f'{r["caught_up_s"]:.2f} s (cluster add returned after {r["add_returned_s"]:.2f} s): ' + rates
                  + (f'; filled at {r["value_bytes"] / r["fill_s"] / 1e6:.1f} MB/s' if r.get("fill_s") else ""))


def main():
    kinds = {"criterion": criterion, "service": service, "cluster": cluster}
    if len(sys.argv) < 2 or sys.argv[1] not in kinds:
        sys.exit(__doc__)
    kinds[sys.argv[1]](*sys.argv[2:4])


if __name__ == "__main__":
    main()
