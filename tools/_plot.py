#!/usr/bin/env python3
"""PNG plots of the benchmarks' results (matplotlib: ``pip install -e '.[plots]'``).

Each ``tools/bench_*.py`` that takes ``--plot DIR`` builds its figures with the helpers
here from the same results it writes with ``--json``, so a plot can also be drawn again
later from a saved JSON file without running the benchmark again::

    python tools/_plot.py bench_sync results.json docs/img     # = bench_sync's --plot

The figures are bar charts, one group per scenario and one bar per candidate, sized
for a documentation page (small PNGs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

# Small figures: the PNGs are committed with the docs.
FIG_SIZE = (7.0, 3.4)
DPI = 90
# rsm_shm's own candidates are drawn in reds, the peers in other colours.
RSM_COLOR = "#d62728"
RSM_COLORS = ["#d62728", "#ff9896", "#8c1c13", "#e377c2"]
PEER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22", "#aec7e8"]


def add_argument(ap: argparse.ArgumentParser) -> None:
    """The ``--plot DIR`` option every benchmark shares."""
    ap.add_argument(
        "--plot",
        metavar="DIR",
        default=None,
        help="also draw the results as PNG files in DIR (needs matplotlib: the [plots] extra)",
    )


def check_available(plot_dir: Optional[str]) -> None:
    """Fail before a long run, not after it, when ``--plot`` cannot be honoured."""
    if plot_dir is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install -e '.[plots]'")
    os.makedirs(plot_dir, exist_ok=True)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(
    path: str,
    title: str,
    groups: Sequence[str],
    series: Dict[str, Sequence[Optional[float]]],
    ylabel: str,
    *,
    log: bool = False,
    note: str = "",
) -> str:
    """One bar chart: ``groups`` along x, one bar per ``series`` entry (candidate ->
    one value per group; None leaves a gap).  Writes ``path`` and returns it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=DPI)
    names = list(series)
    width = 0.8 / max(len(names), 1)
    rsm_colors, peer_colors = iter(RSM_COLORS * 4), iter(PEER_COLORS * 4)
    for i, name in enumerate(names):
        xs, ys = [], []
        for g, v in enumerate(series[name]):
            if v is not None:
                xs.append(g - 0.4 + width * (i + 0.5))
                ys.append(v)
        color = next(rsm_colors) if name.startswith("rsm") else next(peer_colors)
        ax.bar(xs, ys, width=width, label=name, color=color)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _finish(plt, fig, ax, path, title, "y", ylabel, log, note)


def hbars(
    path: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[Optional[float]],
    xlabel: str,
    *,
    log: bool = False,
    note: str = "",
    texts: Optional[Sequence[str]] = None,
) -> str:
    """One horizontal bar per candidate (top to bottom in the order given); a None value
    draws no bar, and ``texts`` (one per bar) are written at the bar's end.  Writes
    ``path`` and returns it."""
    plt = _pyplot()
    height = min(max(1.6, 0.28 * len(labels) + 1.0), 9.0)
    fig, ax = plt.subplots(figsize=(FIG_SIZE[0], height), dpi=DPI)
    ys = list(range(len(labels)))[::-1]
    peer_color = PEER_COLORS[0]
    colors = [RSM_COLOR if label.split(": ")[-1].startswith("rsm") else peer_color for label in labels]
    ax.barh(ys, [0 if v is None else v for v in values], color=colors, height=0.7)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    if texts is not None:
        positive = [v for v in values if v]
        anchor = (min(positive) if positive else 1.0) if log else 0.0
        for y, v, t in zip(ys, values, texts):
            ax.text(v if v else anchor, y, " " + t, va="center", fontsize=6)
    return _finish(plt, fig, ax, path, title, "x", xlabel, log, note)


def _finish(
    plt: Any, fig: Any, ax: Any, path: str, title: str, value_axis: str, label: str, log: bool, note: str
) -> str:
    """What every figure shares: the title, the value axis (label, log scale, grid), the
    machine note at the bottom; then write ``path``."""
    ax.set_title(title, fontsize=10)
    getattr(ax, f"set_{value_axis}label")(label, fontsize=9)
    if log:
        getattr(ax, f"set_{value_axis}scale")("log")
    ax.tick_params(axis=value_axis, labelsize=8)
    ax.grid(axis=value_axis, alpha=0.3)
    if note:
        fig.text(0.01, 0.005, note, fontsize=6, color="#555555")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    _shrink(path)
    return path


def _shrink(path: str) -> None:
    """A bar chart needs few colours: a 64-colour palette makes the PNG about 3x smaller
    (these files are committed with the docs)."""
    from PIL import Image  # a dependency of matplotlib

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def save(
    results: Dict[str, Any],
    json_path: Optional[str],
    plot_dir: Optional[str],
    draw: Callable[[Dict[str, Any], str], List[str]],
) -> None:
    """The end of every benchmark run: write ``results`` to ``json_path`` (``--json``) and
    draw them into ``plot_dir`` (``--plot``) with the benchmark's ``draw(results, dir)``,
    from the same data a later ``_plot.py BENCH RESULTS.json DIR`` reads back."""
    doc = json.loads(json.dumps(results, default=str))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=1)
    if plot_dir:
        for path in draw(doc, plot_dir):
            print(f"plot: {path}")


def revision() -> str:
    """The commit measured, marked '+dirty' if rsm_shm/ or csrc/ differ from it."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "rsm_shm", "csrc"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def run_meta() -> Dict[str, Any]:
    """What every saved result records about the run: the interpreter, the CPUs, the load
    average now (call it when the run starts) and the commit measured (what
    :func:`machine_note` prints)."""
    return {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "revision": revision(),
        "argv": sys.argv[1:],
    }


def machine_note(meta: Dict[str, Any]) -> str:
    """The footnote of every figure: what ran where, under which load."""
    load = meta.get("loadavg_at_start") or meta.get("loadavg")
    load_text = f"load {load[0]:.1f}" if load else "load ?"
    return (
        f"python {meta.get('python', '?')}, {meta.get('cpus', '?')} CPUs (shared machine, {load_text}), "
        f"rsm_shm {meta.get('revision', '?')}"
    )


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Draw a benchmark's saved --json results as PNG files.")
    ap.add_argument("bench", help="the benchmark module in tools/, e.g. bench_sync")
    ap.add_argument("results", help="the JSON file it wrote with --json")
    ap.add_argument("dir", help="where to write the PNG files")
    args = ap.parse_args(argv)
    check_available(args.dir)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    bench = importlib.import_module(args.bench)
    with open(args.results) as f:
        results = json.load(f)
    for path in bench.plot(results, args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
