#!/usr/bin/env python3
"""Turns `ringlog bench --json` results into the table and plots of docs/bench/service.md.

Usage: python3 docs/bench/plot.py [docs/bench/results] [docs/bench]

For every `<name>.json` in the results directory it prints a markdown table row per
measurement (records/s, MB/s, latency percentiles, ratio to bare tonic of the same
repetition) and writes `service-<name>.svg`: a bar per measurement (bare tonic grey,
ringlog blue) with its ratio, and, when latencies were measured, their percentiles on a
log scale. Standard library only, so it runs anywhere.
"""
import json
import math
import os
import sys
from html import escape

PERCENTILES = ("p50", "p90", "p99", "p99_9", "max")


def human(value, unit):
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f} {suffix}{unit}"
    return f"{value:.1f} {unit}"


def bare_rate(runs, run):
    for other in runs:
        if other["server"] == "bare" and other["repeat"] == run["repeat"]:
            return other["records_per_s"]
    return None


def latency_of(run):
    return run.get("delivery_latency_us") or run.get("latency_us")


def svg(title, runs, path):
    width, bar_h, label_w = 760, 22, 150
    lat_runs = [r for r in runs if latency_of(r)]
    lat_h = (60 + 18 * len(lat_runs)) if lat_runs else 0
    height = 40 + bar_h * len(runs) + lat_h
    top = max(r["records_per_s"] for r in runs) or 1
    rows = [f'<text x="10" y="22" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, r in enumerate(runs):
        y = 32 + i * bar_h
        w = (width - label_w - 230) * r["records_per_s"] / top
        base = bare_rate(runs, r)
        ratio = f' ({r["records_per_s"] / base:.0%} of bare)' if base and r["server"] != "bare" else ""
        colour = "#888" if r["server"] == "bare" else "#3b7dd8"
        rows.append(f'<text x="10" y="{y + 15}" font-size="12">{escape(r["server"])} #{r["repeat"]}</text>')
        rows.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="{colour}"/>')
        rows.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="11">'
                    f'{escape(human(r["records_per_s"], "records/s"))}, {r["mb_per_s"]:.0f} MB/s{escape(ratio)}</text>')
    if lat_runs:
        y0 = 40 + bar_h * len(runs) + 10
        kind = "append-to-delivery" if lat_runs[0].get("delivery_latency_us") else "acknowledgement"
        rows.append(f'<text x="10" y="{y0 + 12}" font-size="12" font-weight="bold">'
                    f'{kind} latency per record, µs (log scale)</text>')
        lo = min(latency_of(r)["p50"] for r in lat_runs) or 1
        hi = max(latency_of(r)["max"] for r in lat_runs) or 1
        lo, hi = math.log10(max(lo, 1) / 2), math.log10(hi * 2)
        x0, x1 = label_w, width - 20
        xs = lambda v: x0 + (x1 - x0) * (math.log10(max(v, 1)) - lo) / (hi - lo or 1)
        for decade in range(math.ceil(lo), math.floor(hi) + 1):
            x = xs(10 ** decade)
            rows.append(f'<line x1="{x:.1f}" y1="{y0 + 20}" x2="{x:.1f}" y2="{y0 + 30 + 18 * len(lat_runs)}" stroke="#ddd"/>')
            rows.append(f'<text x="{x:.1f}" y="{y0 + 44 + 18 * len(lat_runs)}" font-size="10" text-anchor="middle">'
                        f'{10 ** decade:g}</text>')
        for i, r in enumerate(lat_runs):
            y = y0 + 32 + 18 * i
            p = latency_of(r)
            colour = "#888" if r["server"] == "bare" else "#3b7dd8"
            rows.append(f'<text x="10" y="{y + 4}" font-size="12">{escape(r["server"])} #{r["repeat"]}</text>')
            rows.append(f'<line x1="{xs(p["p50"]):.1f}" y1="{y}" x2="{xs(p["max"]):.1f}" y2="{y}" stroke="{colour}"/>')
            for name in PERCENTILES:
                rows.append(f'<circle cx="{xs(p[name]):.1f}" cy="{y}" r="3" fill="{colour}">'
                            f'<title>{name} {p[name]:.0f} µs</title></circle>')
            rows.append(f'<text x="{xs(p["p99"]):.1f}" y="{y - 5}" font-size="9" text-anchor="middle">'
                        f'p99 {p["p99"]:.0f}</text>')
    body = "\n".join(rows)
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else "docs/bench/results"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/bench"
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
        svg(title, runs, os.path.join(out, f"service-{name}.svg"))


if __name__ == "__main__":
    main()
