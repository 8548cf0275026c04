#!/usr/bin/env python3
"""Draws docs/throughput.svg from the CSV scripts/throughput-matrix.sh writes: no-op jobs
processed per second against worker concurrency, one line per store (the median of its runs,
each run a dot), the Redis target as a dashed line. Standard library only.

    python3 scripts/plot-throughput.py [in.csv] [out.svg]
"""

import csv
import math
import statistics
import sys
from collections import defaultdict

WIDTH, HEIGHT = 760, 430
LEFT, RIGHT, TOP, BOTTOM = 80, 200, 50, 60
TARGET = 50_000
# Colours of the Redis lines, by how many worker threads the bench ran (fewest first).
REDIS_COLOURS = ["#d62728", "#ff9896", "#8c564b", "#e377c2"]


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else "docs/throughput.csv"
    target = sys.argv[2] if len(sys.argv) > 2 else "docs/throughput.svg"
    runs = defaultdict(list)
    with open(source, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            key = (row["store"], int(row["threads"]) if row["store"] == "redis" else None)
            runs[(key, int(row["concurrency"]))].append(int(row["jobs_per_s"]))

    concurrencies = sorted({c for (_, c) in runs})
    top = max(max(v) for v in runs.values())
    y_max = min(
        m * 10**d for d in range(3, 9) for m in (1, 2, 5) if m * 10**d >= top * 1.1
    )
    y_min = 10_000

    def x(c: int) -> float:
        if len(concurrencies) == 1:
            return LEFT + (WIDTH - LEFT - RIGHT) / 2
        lo, hi = math.log2(concurrencies[0]), math.log2(concurrencies[-1])
        return LEFT + (math.log2(c) - lo) / (hi - lo) * (WIDTH - LEFT - RIGHT)

    def y(v: float) -> float:
        v = max(v, y_min)
        span = math.log10(y_max) - math.log10(y_min)
        return TOP + (1 - (math.log10(v) - math.log10(y_min)) / span) * (HEIGHT - TOP - BOTTOM)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">'
        "No-op jobs processed per second, by worker concurrency</text>",
    ]
    # Grid and axes (log scale).
    for decade in range(int(math.log10(y_min)), int(math.log10(y_max)) + 1):
        for m in (1, 2, 5):
            v = m * 10**decade
            if y_min <= v <= y_max:
                out.append(
                    f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                    'stroke="#e5e5e5"/>'
                )
                out.append(
                    f'<text x="{LEFT - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,}</text>'
                )
    for c in concurrencies:
        out.append(
            f'<text x="{x(c):.1f}" y="{HEIGHT - BOTTOM + 20}" text-anchor="middle">{c}</text>'
        )
    out.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 18}" text-anchor="middle">'
        "worker concurrency (jobs at once)</text>"
    )
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#333"/>'
    )
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(TARGET):.1f}" y2="{y(TARGET):.1f}" '
        'stroke="#d62728" stroke-dasharray="6 4"/>'
        f'<text x="{LEFT + 6}" y="{y(TARGET) - 6:.1f}" fill="#d62728">'
        f"Redis target: {TARGET:,} jobs/s</text>"
    )
    # (store, worker threads or None for the store's own runs, label, colour)
    series = [("memory", None, "memory", "#7f7f7f"), ("sqlite", None, "SQLite", "#1f77b4")]
    redis_threads = sorted({threads for ((store, threads), _) in runs if store == "redis"})
    for threads, colour in zip(redis_threads, REDIS_COLOURS):
        plural = "s" if threads > 1 else ""
        series.append(("redis", threads, f"Redis (bench on {threads} worker thread{plural})", colour))
    legend_y = TOP + 10
    for store, threads, label, colour in series:
        points = sorted((c, v) for ((key, c), v) in runs.items() if key == (store, threads))
        if not points:
            continue
        medians = [(c, statistics.median(v)) for c, v in points]
        if len(medians) > 1:
            path = " ".join(f"{x(c):.1f},{y(m):.1f}" for c, m in medians)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for c, values in points:
            for v in values:
                out.append(f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
        for c, m in medians:
            out.append(
                f'<rect x="{x(c) - 4:.1f}" y="{y(m) - 4:.1f}" width="8" height="8" fill="{colour}"/>'
            )
        out.append(
            f'<rect x="{WIDTH - RIGHT + 6}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
        )
        words, line = label.split(" "), ""
        lines = []
        for word in words:
            if len(line) + len(word) > 26:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for i, text in enumerate(lines):
            out.append(f'<text x="{WIDTH - RIGHT + 22}" y="{legend_y + i * 14}">{text}</text>')
        legend_y += 14 * len(lines) + 10
    out.append(
        f'<text x="{WIDTH - RIGHT + 6}" y="{legend_y + 6}" fill="#555">squares: median;</text>'
        f'<text x="{WIDTH - RIGHT + 6}" y="{legend_y + 20}" fill="#555">dots: each run</text>'
    )
    out.append("</svg>")
    with open(target, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
