"""Layer-wise hints (FitNets) for SVD students, on scikit-learn's digits.

An SVD student keeps every hidden layer's width, so besides the teacher's soft targets
it can learn the teacher's hidden activations: ``distill(..., hint_weight=B)`` adds B x
the mean squared difference after each matching nonlinearity (each layer divided by the
teacher's activation variance). For each seed: examples/digits.py's teacher
(64-256-256-10, from labels); two students of 5% of its parameters with the same ranks
(plain SVD, the output layer kept whole): the compressed teacher itself, and the same
structure with fresh random weights (where the hidden layers have everything to learn).
Each is distilled (no labels; digits.TRAIN settings, Kaldi's newbob schedule) with
B = 0 (soft targets alone) and the other weights of --weights, and the script reports:

- epochs to reach the CV KL that B = 0 ends with (its best epoch's), and
- the held-out KL(teacher || student) and top-1 agreement of the model each run keeps.

    pip install scikit-learn        # or: pip install '.[bench]'
    python examples/hints.py [--seeds 0,1,2,3,4] [--weights 1,10] [--markdown]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

import svdistill

_spec = importlib.util.spec_from_file_location("digits", Path(__file__).resolve().parent / "digits.py")
digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(digits)  # type: ignore[union-attr]

BUDGET = 0.05
WEIGHTS = (1.0, 10.0)
STUDENTS = (("compressed", "SVD of the teacher"), ("random", "same ranks, random weights"))


def epochs_to(curve: List[float], target: float) -> Optional[int]:
    """The first epoch (1-based) whose CV KL is at most ``target``; None if none is."""
    for i, v in enumerate(curve):
        if v <= target:
            return i + 1
    return None


def run(seed: int, weights, verbose: bool, budget: float = BUDGET) -> Dict:
    xtr, xte, ytr, yte = digits.load_digits(seed)
    ft = digits.feature_transform(xtr)
    feats, labels = digits.utterances(xtr, ytr)
    rng = np.random.default_rng(seed)
    log = (lambda s: print("    " + s, file=sys.stderr)) if verbose else None
    teacher, _ = svdistill.distill(digits.mlp([64, 256, 256, 10], rng), feats, labels=labels,
                                   feature_transform=ft, log=log, **digits.TRAIN)
    compressed, _ = svdistill.compress(teacher, param_budget=budget, **digits.PLAIN)
    starts = {"compressed": compressed,
              "random": digits.reinit_like(compressed, np.random.default_rng((seed, 5)))}
    row: Dict = {"seed": seed}
    for name, start in starts.items():
        for b in (0.0, *weights):
            model, rep = svdistill.distill(start, feats, teacher=teacher, feature_transform=ft, hint_weight=b,
                                           log=log, **digits.TRAIN)
            # The CV KL after each accepted epoch (a rejected one keeps the model before it).
            curve, best = [], float("inf")
            for e in rep.epochs[1:]:
                if e.accepted and e.cv_kl is not None:
                    best = min(best, e.cv_kl)
                curve.append(best)
            agree, kl = digits.closeness(teacher, model, ft, xte)
            row[name, b] = {"curve": curve, "best": min(curve), "kl": kl, "agree": agree,
                            "epochs": len(rep.epochs) - 1}
        target = row[name, 0.0]["best"]
        for b in (0.0, *weights):
            row[name, b]["to_target"] = epochs_to(row[name, b]["curve"], target)
    return row


def table(rows, weights, markdown: bool, budget: float = BUDGET) -> List[str]:
    cols = ["student", "hint weight", "epochs to B=0's CV KL (median)", "epochs run (median)",
            "held-out KL (median)", "agreement (mean)"]
    lines = []
    if markdown:
        lines += ["| " + " | ".join(cols) + " |", "|---|--:|--:|--:|--:|--:|"]
    for name, label in STUDENTS:
        for b in (0.0, *weights):
            runs = [r[name, b] for r in rows]
            reached = [x["to_target"] for x in runs]
            hit = [x for x in reached if x is not None]
            to = f"{np.median(hit):g}" + ("" if len(hit) == len(reached) else f" ({len(reached) - len(hit)} never)") \
                if hit else "never"
            cells = [f"{budget:.0%} {label}", f"{b:g}", to, f"{np.median([x['epochs'] for x in runs]):g}",
                     f"{np.median([x['kl'] for x in runs]):.4f}", f"{np.mean([x['agree'] for x in runs]):.2%}"]
            lines.append("| " + " | ".join(cells) + " |" if markdown else
                         f"{cells[0]:<34} {cells[1]:>6} {cells[2]:>14} {cells[3]:>6} {cells[4]:>9} {cells[5]:>8}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--weights", default=",".join(f"{w:g}" for w in WEIGHTS),
                    help="hint weights besides 0 (default: 1,10)")
    ap.add_argument("--budget", type=float, default=BUDGET, help="the students' size (default: 0.05)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    weights = [float(w) for w in a.weights.split(",")]
    t0 = time.perf_counter()
    rows = [run(int(s), weights, a.verbose, a.budget) for s in a.seeds.split(",")]
    print("\n".join(table(rows, weights, a.markdown, a.budget)))
    print(f"\n{len(rows)} seeds; {time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
