"""Every table cell of two reproductions side by side: what a change of κ rule, stream or seeds moved.

Usage (from the repository root):
    .venv/bin/python benchmarks/before_after.py BEFORE_DIR [AFTER_DIR] [--note TEXT] > before_after.md
For issue 15 (the file in results/):
    git worktree add /tmp/before 7a77b67
    .venv/bin/python benchmarks/before_after.py /tmp/before/benchmarks/results --note "$(cat NOTE)"
BEFORE_DIR / AFTER_DIR are results folders as ``reproduce.py`` writes them (``raw/<model>/…``);
AFTER_DIR defaults to benchmarks/results. A cell is "moved" when its rounded value changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from reproduce import LABELS, PAPER, RESULTS, ROWS, load, verdicts

METRICS = {"scpe": ("SCPE %", 2), "query_accuracy": ("query accuracy", 3), "n_retrains": ("retrains", 2)}


def frame_of(folder: Path, model: str):
    return load(folder, model, {s: 10 for _, s in ROWS})[0]


def means(frame):
    return frame.groupby(["stream", "policy"])[list(METRICS)].mean()


def verdict_section(model: str, before, after) -> list[str]:
    """The CARA-T verdicts row by row (full sweep; high-κ half), before → after."""
    rows_b, rows_a = verdicts(before, model).splitlines(), verdicts(after, model).splitlines()
    lines = [f"### {model.upper()}: does CARA-T have a lower mean SCPE than ADWIN, DDM, NR? "
             "(before ⟶ after; ◀ changed)", "",
             rows_a[0], rows_a[1]]
    changed = 0
    for b, a in zip(rows_b[2:], rows_a[2:]):
        cells_b, cells_a = b.strip("|").split("|"), a.strip("|").split("|")
        out = [cells_a[0].strip()]
        for cb, ca in zip(cells_b[1:], cells_a[1:]):
            same = cb.strip() == ca.strip()
            changed += not same
            out.append(ca.strip() if same else f"{cb.strip()} ⟶ {ca.strip()} ◀")
        lines.append("| " + " | ".join(out) + " |")
    return lines + ["", f"{changed} verdict cells changed.", ""]


def _fmt(v: float, digits: int) -> str:
    return "n/a" if v != v else f"{v:.{digits}f}"


def section(model: str, before, after) -> list[str]:
    lines = []
    for metric, (title, digits) in METRICS.items():
        cols, paper = PAPER[(model, metric)]
        lines += [f"### {model.upper()}: {title} (before → after; paper)", "",
                  "| Dataset | " + " | ".join(LABELS[c] for c in cols) + " |", "|---|" + "---|" * len(cols)]
        moved = 0
        for label, stream in ROWS:
            cells = []
            for j, c in enumerate(cols):
                b = float(before[metric].get((stream, c), np.nan))
                a = float(after[metric].get((stream, c), np.nan))
                changed = _fmt(b, digits) != _fmt(a, digits)
                moved += changed
                arrow = f"{_fmt(b, digits)} → **{_fmt(a, digits)}**" if changed else _fmt(a, digits)
                cells.append(f"{arrow} ({paper[stream][j]:g})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", f"{moved} of {len(ROWS) * len(cols)} cells moved.", ""]
    return lines


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path, nargs="?", default=RESULTS)
    parser.add_argument("--note", default="", help="what the two folders are (printed under the title)")
    args = parser.parse_args(argv)
    before_dir, after_dir = args.before, args.after
    out = ["# Before / after", "", f"Before: `{before_dir}`; after: `{after_dir}`. {args.note} "
           "Means over each folder's "
           "κ sweep and seeds; SCPE n/a where the ORACLE's cost is ≤ 0 (averaged over the cells where it is "
           "> 0 otherwise). Bold: the cell moved.", ""]
    for model in ("rf", "lr"):
        before, after = frame_of(before_dir, model), frame_of(after_dir, model)
        if before is not None and after is not None:
            out += verdict_section(model, before, after) + section(model, means(before), means(after))
    print("\n".join(out))


if __name__ == "__main__":
    main()
