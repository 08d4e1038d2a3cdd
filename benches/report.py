#!/usr/bin/env python3
"""Turns criterion's results into the tables and plots of docs/benchmarks.md.

Usage: python3 benches/report.py [target/criterion] [docs/bench]

Reads every `<group>/<member>/new/{benchmark,estimates}.json` under the criterion
directory, computes each member's throughput and its ratio to the group's raw baseline
(the member whose name starts with `raw_`; when a group has several, the one with the
same parameter), prints a markdown table per group, and writes one SVG bar chart per
group into the output directory. Standard library only, so it runs anywhere.
"""
import json
import os
import sys
from html import escape


def load(root):
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


def name(member):
    return "/".join(p for p in (member["function"], member["parameter"]) if p)


def baseline_for(members, member):
    raws = [m for m in members if m["function"].startswith("raw_")]
    if not raws:
        return None
    same = [m for m in raws if m["parameter"] == member["parameter"]]
    return (same or raws)[0]


def human(value, unit):
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f} {suffix}{unit}"
    return f"{value:.1f} {unit}"


def svg(group, members, path):
    width, bar_h, label_w = 760, 22, 330
    height = 40 + bar_h * len(members)
    top = max(m["per_second"] for m in members) or 1
    rows = [f'<text x="10" y="22" font-size="14" font-weight="bold">{escape(group)}</text>']
    for i, m in enumerate(members):
        y = 32 + i * bar_h
        w = (width - label_w - 150) * m["per_second"] / top
        base = baseline_for(members, m)
        ratio = f' ({m["per_second"] / base["per_second"]:.0%} of raw)' if base and base is not m else ""
        colour = "#888" if m["function"].startswith("raw_") else "#3b7dd8"
        rows.append(f'<text x="10" y="{y + 15}" font-size="12">{escape(name(m))}</text>')
        rows.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="{colour}"/>')
        rows.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="11">'
                    f'{escape(human(m["per_second"], m["unit"]))}{escape(ratio)}</text>')
    body = "\n".join(rows)
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/bench"
    os.makedirs(out, exist_ok=True)
    for group, members in sorted(load(root).items()):
        members.sort(key=lambda m: (not m["function"].startswith("raw_"), m["function"], m["parameter"]))
        print(f"\n### {group}\n\n![{group}](bench/{group}.svg)\n")
        print("| member | throughput | ratio to raw baseline |\n|---|---|---|")
        for m in members:
            base = baseline_for(members, m)
            ratio = f'{m["per_second"] / base["per_second"]:.2f}' if base else "-"
            print(f'| {name(m)} | {human(m["per_second"], m["unit"])} | {ratio} |')
        svg(group, members, os.path.join(out, f"{group}.svg"))


if __name__ == "__main__":
    main()
