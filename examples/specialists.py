"""A generalist and its specialists (Hinton et al. 2015, section 5) on scikit-learn's digits.

For each seed: the generalist is examples/digits.py's teacher (64-256-256-10, trained on
the labels with the same settings); for each configuration (K specialists, overlap),
svdistill.specialists clusters the 10 classes by the covariance of the generalist's
predictions on the training digits and trains K specialists (each started from the
generalist, its output reduced to its classes + a dustbin, on the generalist's soft
targets and the labels, half of its frames from its classes). The held-out digits are
scored by the generalist alone and by the ensemble (section 5.3's KL combination) with
the specialists selected by the generalist's top-n classes, n = 1, 2, 3. Then a student of
10% of the generalist's parameters (plain SVD, output layer kept whole, as examples/digits.py)
is distilled twice without labels: from the generalist, and from the ensemble of the first
configuration (``teacher_ensemble=``, its default top-n).

    pip install scikit-learn        # or: pip install '.[bench]'
    python examples/specialists.py [--seeds 0,1,2,3,4] [--configs 3:0,4:1] [--markdown]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import svdistill
from svdistill.specialists import Ensemble, specialists

_spec = importlib.util.spec_from_file_location("digits", Path(__file__).resolve().parent / "digits.py")
digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(digits)  # type: ignore[union-attr]

#: (K specialists, overlap) per configuration.
CONFIGS = ((3, 0), (4, 1))
TOP_N = (1, 2, 3)
#: The distilled student's size: a fraction of the generalist's parameters.
STUDENT_BUDGET = 0.1


def run(seed: int, out: str, configs, verbose: bool) -> dict:
    xtr, xte, ytr, yte = digits.load_digits(seed)
    ft = digits.feature_transform(xtr)
    feats, labels = digits.utterances(xtr, ytr)
    rng = np.random.default_rng(seed)
    log = (lambda s: print("    " + s, file=sys.stderr)) if verbose else None
    t0 = time.perf_counter()
    g, _ = svdistill.distill(digits.mlp([64, 256, 256, 10], rng), feats, labels=labels, feature_transform=ft,
                             log=log, **digits.TRAIN)
    gpath = os.path.join(out, f"generalist-{seed}.nnet")
    g.write(gpath, binary=True)
    row: dict = {"seed": seed, "generalist": float((svdistill.forward(g, xte, feature_transform=ft).argmax(1)
                                                    == yte).mean())}
    for k, overlap in configs:
        folder = os.path.join(out, f"seed{seed}-k{k}-o{overlap}")
        res = specialists(gpath, feats, folder, feature_transform=ft, num_specialists=k, overlap=overlap,
                          labels=labels, seed=seed, log=log, **digits.TRAIN)
        ens = Ensemble(res.ensemble)
        for n in TOP_N:
            q = ens(xte, top_n=n)
            row[k, overlap, n] = float((q.argmax(1) == yte).mean())
        if (k, overlap) == tuple(configs[0]):
            compressed, _ = svdistill.compress(g, param_budget=STUDENT_BUDGET, **digits.PLAIN)
            for name, teacher in (("from generalist", dict(teacher=g)),
                                  ("from ensemble", dict(teacher_ensemble=res.ensemble))):
                student, _ = svdistill.distill(compressed, feats, feature_transform=ft, log=log, **teacher,
                                               **digits.TRAIN)
                row[name] = float((svdistill.forward(student, xte, feature_transform=ft).argmax(1) == yte).mean())
        row[k, overlap, "sizes"] = [len(c) for c in res.classes]
        row[k, overlap, "rms"] = float(np.mean(list(res.init_dustbin_rms.values())))
    row["seconds"] = time.perf_counter() - t0
    return row


def table(rows, configs, markdown: bool):
    seeds = [r["seed"] for r in rows]
    lines = []
    cols = ["model", *[f"seed {s}" for s in seeds], "mean"]
    if markdown:
        cols[2:1 + len(seeds)] = [str(s) for s in seeds[1:]]
        lines += ["| " + " | ".join(cols) + " |", "|---|" + "--:|" * (len(cols) - 1)]
    else:
        lines.append(f"{cols[0]:<44} " + " ".join(f"{c:>8}" for c in cols[1:]))

    def add(label, vals):
        cells = [f"{v:.2%}" for v in vals + [float(np.mean(vals))]]
        lines.append("| " + " | ".join([label, *cells]) + " |" if markdown else
                     f"{label:<44} " + " ".join(f"{c:>8}" for c in cells))

    add("generalist 64-256-256-10", [r["generalist"] for r in rows])
    for k, overlap in configs:
        for n in TOP_N:
            add(f"+ {k} specialists, overlap {overlap}, top-{n}", [r[k, overlap, n] for r in rows])
    k, overlap = configs[0]
    for name in ("from generalist", "from ensemble"):
        add(f"{STUDENT_BUDGET:.0%} student distilled {name}" + (f" ({k}:{overlap})" if "ensemble" in name else ""),
            [r[name] for r in rows])
    return lines


def config_list(text: str):
    try:
        out = [tuple(int(v) for v in c.split(":")) for c in text.split(",")]
    except ValueError:
        out = []
    if not out or any(len(c) != 2 or c[0] < 1 or c[1] < 0 for c in out):
        raise argparse.ArgumentTypeError(f"expected K:OVERLAP,... (e.g. 3:0,4:1), got {text!r}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for the models (default: a temporary folder)")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--configs", type=config_list, default=list(CONFIGS),
                    help="K:OVERLAP per configuration (default: 3:0,4:1)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="svdistill-specialists-")
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    rows = [run(int(s), out, a.configs, a.verbose) for s in a.seeds.split(",")]
    print("Test accuracy:")
    print("\n".join(table(rows, a.configs, a.markdown)))
    for k, overlap in a.configs:
        sizes = sorted({tuple(sorted(r[k, overlap, "sizes"])) for r in rows})
        rms = np.mean([r[k, overlap, "rms"] for r in rows])
        print(f"K={k} overlap={overlap}: classes per specialist {', '.join(map(str, sizes))}; "
              f"initial dustbin row fit RMS {rms:.3f} nats (the teacher's dustbin is exact)")
    print(f"\n{len(digits.load_digits(0)[1])} held-out digits; {time.perf_counter() - t0:.0f} s in all; "
          f"models in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
