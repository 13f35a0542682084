"""Check candidate per-dataset kappa ranges (multiples m of each seed's Psi_off, 10 log-spaced values, our units)
against the paper's Table 4 retrain means and Table 2 NR SCPE, and the text's anchors.

Usage: ../../.venv/bin/python proposals.py
"""
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
POL = ["cara-t", "cara-ct", "cara-p", "oracle", "markov"]
PAPER = {"covcon-d": ([13.89, 13.33, 10.75, 11.2, 7.18], 141.12, 17.72),
         "electricity": ([2.39, 5.08, 7.83, 2.36, 1.53], 17.08, 8.32)}
CANDIDATES = {
    "covcon-d": [(2 ** -4, 2 ** 4, "current rule"), (0.5, 8, ""), (0.5, 6, ""), (0.25, 8, ""), (0.15, 10, ""),
                 (0.25, 16, ""), (0.5, 16, ""), (0.15, 16, ""), (1, 8, "")],
    "electricity": [(2 ** -4, 2 ** 4, "current rule"), (1, 64, ""), (0.75, 48, ""), (1, 32, ""), (0.5, 32, ""),
                    (1.2, 64, ""), (1.4, 80, "")],
}


def at(rows, key, kappas):
    ks = np.log([r["kappa"] for r in rows])
    return np.interp(np.log(kappas), ks, [r[key] for r in rows])


def main(conv_index=0):
    for stream, cands in CANDIDATES.items():
        docs = [json.loads(f.read_text()) for f in sorted(OUT.glob(f"{stream}-seed[0-9].json"))]
        target, nr_paper, t_paper = PAPER[stream]
        print(f"\n== {stream} ({len(docs)} seeds), convention {docs[0]['results'][conv_index]['convention']}; "
              f"paper Table 4 {target}, NR SCPE {nr_paper}, CARA-T SCPE {t_paper}")
        for lo, hi, note in cands:
            got, nr, ct = [], [], []
            for d in docs:
                res = d["results"][conv_index]
                ks = np.geomspace(lo, hi, 10) * res["psi_off_mean"]
                got.append([at(res["rows"], p, ks).mean() for p in POL])
                nr.append(at(res["rows"], "scpe_nr", ks).mean())
                ct.append(at(res["rows"], "scpe_cara-t", ks).mean())
            got = np.mean(got, axis=0)
            rms = float(np.sqrt(np.mean((got - np.array(target)) ** 2)))
            scale = np.mean([d["results"][conv_index]["psi_off_mean"] for d in docs])
            print(f"  m {lo:.3g}..{hi:.3g} (kappa ~{lo * scale:.3g}..{hi * scale:.3g}) {note:>12}: retrains "
                  f"{[round(g, 1) for g in got]} RMS {rms:.2f}; NR SCPE {np.mean(nr):.0f}; "
                  f"CARA-T SCPE {np.mean(ct):.1f}")


if __name__ == "__main__":
    main()
