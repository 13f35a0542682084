"""Summarise benchmarks/units_study/out/*.json: per convention, the kappa where the ORACLE (and CARA) drop below
ten online retrains (ELECTRICITY statement) and the phi* profile of CARA-P vs kappa (CovCon-D statement).

Usage: ../../.venv/bin/python analyse.py [--detail covcon-d-seed0]
"""
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def first_below(rows, key, n=10):
    """Smallest kappa from which `key` stays < n for every larger kappa of the grid."""
    ks = [r["kappa"] for r in rows]
    ok = [r[key] < n for r in rows]
    for i in range(len(rows)):
        if all(ok[i:]):
            return ks[i]
    return float("nan")


def phi_profile(rows):
    """Runs of constant phi*: [(kappa_lo, kappa_hi, phi)]."""
    runs = []
    for r in rows:
        if runs and runs[-1][2] == r["phi"]:
            runs[-1][1] = r["kappa"]
        else:
            runs.append([r["kappa"], r["kappa"], r["phi"]])
    return runs


def covcon_check(rows):
    """Does phi* == 2 on every grid kappa in [kmin, 50] and == 10 on (50, 125]? Report share of grid points."""
    lo = [r for r in rows if 1.0 <= r["kappa"] <= 50]
    hi = [r for r in rows if 50 < r["kappa"] <= 125]
    s2 = np.mean([r["phi"] == 2 for r in lo]) if lo else np.nan
    s10 = np.mean([r["phi"] == 10 for r in hi]) if hi else np.nan
    return s2, s10


def phi_span(rows, phi):
    ks = [r["kappa"] for r in rows if r["phi"] == phi]
    return (min(ks), max(ks)) if ks else (np.nan, np.nan)


def main():
    detail = sys.argv[sys.argv.index("--detail") + 1] if "--detail" in sys.argv else None
    for f in sorted(OUT.glob("*.json")):
        doc = json.loads(f.read_text())
        print(f"\n== {f.stem}  |Q|={doc['n_queries']:.0f} |D|={doc['n_data']:.0f}")
        for res in doc["results"]:
            rows = res["rows"]
            scale = res["psi_off_mean"]
            k_or = first_below(rows, "oracle")
            k_all = max(first_below(rows, p) for p in ("oracle", "cara-t", "cara-ct", "cara-p"))
            s2, s10 = covcon_check(rows)
            lo2, hi2 = phi_span(rows, 2)
            lo10, hi10 = phi_span(rows, 10)
            at25 = min(rows, key=lambda r: abs(np.log(r["kappa"] / 2.5)))
            print(f"{res['convention'][:44]:<44} g={res['gamma']:<7.3g} Psi_off={scale:<8.4g} "
                  f"ORACLE<10 from k={k_or:<8.3g}(={k_or / scale:.2f} Psi_off) all<10 from {k_all:<8.3g} "
                  f"| at k=2.5: OR {at25['oracle']} P{at25['phi']} | phi2 on [{lo2:.3g},{hi2:.3g}] phi10 on "
                  f"[{lo10:.3g},{hi10:.3g}] share(phi2|1..50)={s2:.2f} share(phi10|50..125)={s10:.2f}")
            if detail and f.stem == detail:
                print("   phi runs:", [(round(a, 3), round(b, 3), p) for a, b, p in phi_profile(rows)])
                print("   oracle:", [(round(r['kappa'], 3), r['oracle']) for r in rows[::2]])


if __name__ == "__main__":
    main()
