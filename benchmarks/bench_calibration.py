#!/usr/bin/env python3
"""Calibrated compression on real data: which budget rule and which ridge.

On scikit-learn's handwritten digits (examples/digits.py: a 64-256-256-10 sigmoid
teacher per seed, trained from the labels), every selected layer is compressed
under --param-budget B (the output layer included) and the student is scored on
the held-out 30% against its teacher: top-1 agreement, KL(teacher || student)
per frame and accuracy. Rows:

  plain                no calibration (the Frobenius-optimal greedy of today)
  rule=absolute        calibrated, layers compared by raw output error energy
  rule=relative        calibrated, each layer's relative output error weighs alike
  rule=measured        calibrated, layers compared by the model's output loss with
                       each alone truncated, measured at 1/4x..4x the relative rule's
                       ranks (the default)
  refine               rule=measured, then refine=True (least-squares refit of each
                       out x k factor on the student's own inputs)
  ridge=R              rule=measured with the whitening's relative ridge R

Calibration: the training features (1,257 frames), through the feature transform.
Prints medians over the seeds (and each seed's KL). Quality, not time: the run
takes about a minute on 2 cores.

    python benchmarks/bench_calibration.py [--seeds 0,1,2,3,4] [--budgets 0.1,0.05]
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
from pathlib import Path

import numpy as np

import svdistill

cal_mod = importlib.import_module("svdistill.calibration")
compress_mod = importlib.import_module("svdistill.budget")

REPO = Path(__file__).resolve().parents[1]


def _digits():
    spec = importlib.util.spec_from_file_location("digits", REPO / "examples" / "digits.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def scores(teacher, student, ft, x, y):
    p = svdistill.forward(teacher, x, feature_transform=ft).astype(np.float64)
    q = svdistill.forward(student, x, feature_transform=ft).astype(np.float64)
    kl = float(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30)), axis=1)))
    return {"agree": float(np.mean(p.argmax(1) == q.argmax(1))), "kl": kl,
            "acc": float(np.mean(q.argmax(1) == y))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--budgets", default="0.1,0.05")
    ap.add_argument("--ridges", default="1e-6,1e-4,1e-2,1e-1")
    ap.add_argument("--ranks", action="store_true", help="print each compression's ranks on stderr")
    a = ap.parse_args()
    digits = _digits()
    seeds = [int(s) for s in a.seeds.split(",")]
    budgets = [float(b) for b in a.budgets.split(",")]
    rows = ["plain", "rule=absolute", "rule=relative", "rule=measured", "refine"] + \
        [f"ridge={r}" for r in a.ridges.split(",")]
    results = {(b, r): [] for b in budgets for r in rows}
    default_ridge = cal_mod._RIDGE
    print(f"svdistill {svdistill.__version__}; {svdistill.build_info()['blas_config']}; "
          f"default ridge {default_ridge:g}", file=sys.stderr)
    for seed in seeds:
        xtr, xte, ytr, yte = digits.load_digits(seed)
        ft = digits.feature_transform(xtr)
        feats, labels = digits.utterances(xtr, ytr)
        rng = np.random.default_rng(seed)
        teacher, _ = svdistill.distill(digits.mlp([64, 256, 256, 10], rng), feats, labels=labels,
                                       feature_transform=ft, **digits.TRAIN)
        for b in budgets:
            for row in rows:
                kw = {}
                compress_mod._BUDGET_RULE = "measured"
                cal_mod._RIDGE = default_ridge
                if row != "plain":
                    kw = dict(calibration=feats, feature_transform=ft)
                    what, val = row.split("=") if "=" in row else (row, "")
                    if what == "refine":
                        kw["refine"] = True
                    elif what == "rule":
                        compress_mod._BUDGET_RULE = val
                    else:
                        cal_mod._RIDGE = float(val)
                student, rep = svdistill.compress(teacher, param_budget=b, **kw)
                if a.ranks:
                    print(seed, b, row, [L.rank for L in rep.layers], file=sys.stderr)
                results[(b, row)].append(scores(teacher, student, ft, xte, yte))
        compress_mod._BUDGET_RULE = "measured"
        cal_mod._RIDGE = default_ridge
    print(f"digits, teacher 64-256-256-10, held-out 30%, seeds {a.seeds}: medians "
          "(agreement with the teacher, KL(teacher||student) nats/frame, accuracy)")
    for b in budgets:
        print(f"\n--param-budget {b}")
        print(f"{'row':<20} {'agree':>7} {'KL':>8} {'acc':>7}   KL per seed")
        for row in rows:
            r = results[(b, row)]
            med = {k: statistics.median(x[k] for x in r) for k in ("agree", "kl", "acc")}
            print(f"{row:<20} {med['agree']:>7.2%} {med['kl']:>8.4f} {med['acc']:>7.2%}   " +
                  " ".join(f"{x['kl']:.4f}" for x in r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
