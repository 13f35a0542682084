"""Markdown tables for FINDINGS.md from benchmarks/units_study/out/*.json.

Usage: ../../.venv/bin/python tables.py > tables.md
"""
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
KAPPAS = [1, 2.5, 5, 10, 20, 50, 125, 250, 500]
CARA = ("cara-t", "cara-ct", "cara-p")


def load():
    groups = defaultdict(list)
    for f in sorted(OUT.glob("*.json")):
        doc = json.loads(f.read_text())
        label = doc["stream"] + ("" if doc.get("alpha") is None else f" (alpha={doc['alpha']:g})")
        groups[label].append(doc)
    return groups


def stays_below(rows, keys, n=10):
    ok = [all(r[k] < n for k in keys) for r in rows]
    for i in range(len(rows)):
        if all(ok[i:]):
            return rows[i]["kappa"]
    return float("nan")


def switch_from_2(rows):
    """Smallest kappa with phi* >= 10 after phi* has been 2 (the 2 -> long-period switch)."""
    seen2 = False
    for r in rows:
        seen2 |= r["phi"] == 2
        if seen2 and r["phi"] >= 10:
            return r["kappa"]
    return float("nan")


def phi2_span(rows):
    ks = [r["kappa"] for r in rows if r["phi"] == 2]
    return (min(ks), max(ks)) if ks else (float("nan"), float("nan"))


def near(rows, k):
    return min(rows, key=lambda r: abs(np.log(r["kappa"] / k)))


def fmt(x):
    return "—" if x != x else f"{x:.3g}"


def main():
    groups = load()
    print("### Summary per convention (grid: 10 kappa values per decade; values = per-seed, ';'-separated)\n")
    print("| dataset | convention | γ | Ψ̄_off (mean) | κ: ORACLE stays <10 | same ÷ Ψ̄_off "
          "| κ: ORACLE+CARA-T/CT/P all <10 | "
          "CARA-P φ*=2 span | κ: φ* 2→≥10 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, docs in groups.items():
        convs = [r["convention"] for r in docs[0]["results"]]
        for ci, conv in enumerate(convs):
            res = [d["results"][ci] for d in docs]
            g = res[0]["gamma"]
            scale = np.mean([r["psi_off_mean"] for r in res])
            k_or = [stays_below(r["rows"], ("oracle",)) for r in res]
            k_all = [stays_below(r["rows"], ("oracle",) + CARA) for r in res]
            spans = [phi2_span(r["rows"]) for r in res]
            sw = [switch_from_2(r["rows"]) for r in res]
            print(f"| {label} | {conv} | {g:.3g} | {scale:.3g} | {'; '.join(fmt(k) for k in k_or)} | "
                  f"{'; '.join(fmt(k / r['psi_off_mean']) for k, r in zip(k_or, res))} | "
                  f"{'; '.join(fmt(k) for k in k_all)} | {'; '.join(f'{fmt(a)}–{fmt(b)}' for a, b in spans)} | "
                  f"{'; '.join(fmt(k) for k in sw)} |")
    print("\n### ORACLE retrains (mean over seeds) / CARA-P φ* (per seed) at fixed κ\n")
    print("| dataset | convention | " + " | ".join(f"κ={k:g}" for k in KAPPAS) + " |")
    print("|---|---|" + "---|" * len(KAPPAS))
    for label, docs in groups.items():
        convs = [r["convention"] for r in docs[0]["results"]]
        for ci, conv in enumerate(convs):
            res = [d["results"][ci] for d in docs]
            cells = []
            for k in KAPPAS:
                rs = [near(r["rows"], k) for r in res]
                cells.append(f"{np.mean([r['oracle'] for r in rs]):.1f} / {','.join(str(r['phi']) for r in rs)}")
            print(f"| {label} | {conv} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
