"""Hinton et al.'s MNIST experiment in miniature, on scikit-learn's handwritten digits.

1. Train a teacher MLP (nnet1 format, with svdistill's own trainer, labels only).
2. Compress it with truncated SVD to 10% of its parameters.
3. Distill the compressed model from the teacher (soft targets at T; no labels).
4. For reference, train a student of the same size and structure from labels only.

Every model is an ordinary Kaldi nnet1 file; the standardisation is an nnet1 feature
transform (<AddShift> + <Rescale>). Prints a table of test accuracies.

    pip install scikit-learn        # or: pip install '.[bench]'
    python examples/digits.py [--out DIR] [--seeds 0,1,2,3,4] [--verbose]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import svdistill
from svdistill import Component, Model


def load_digits(seed: int):
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split
    d = _load()
    x = d.data.astype(np.float32)
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)


def feature_transform(x_train: np.ndarray) -> Model:
    """Global mean/variance normalisation as Kaldi writes it: <AddShift> then <Rescale>."""
    mean = x_train.mean(0)
    std = x_train.std(0)
    dim = x_train.shape[1]
    shift = Component.activation("AddShift", dim)
    shift.params["shift_data"][...] = -mean
    rescale = Component.activation("Rescale", dim)
    rescale.params["scale_data"][...] = 1.0 / np.maximum(std, 1e-3)
    for c in (shift, rescale):
        c.learn_rate_coef = 0.0
    return Model([shift, rescale])


def mlp(dims, rng: np.random.Generator) -> Model:
    """A freshly initialised sigmoid MLP, as Kaldi's nnet-initialize would give it."""
    comps = []
    for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
        w = rng.normal(0.0, 1.0 / np.sqrt(din), size=(dout, din)).astype(np.float32)
        comps.append(Component.affine(w, np.zeros(dout, np.float32)))
        comps.append(Component.activation("Sigmoid" if i < len(dims) - 2 else "Softmax", dout))
    return Model(comps)


def reinit_like(model: Model, rng: np.random.Generator) -> Model:
    """Same structure (ranks included), fresh random weights."""
    comps = []
    for c in model.components:
        c = c.copy()
        if c.weight is not None:
            c.weight[...] = rng.normal(0.0, 1.0 / np.sqrt(c.input_dim), size=c.weight.shape)
            if c.bias is not None:
                c.bias[...] = 0.0
        comps.append(c)
    return Model(comps)


def accuracy(model: Model, ft: Model, x: np.ndarray, y: np.ndarray) -> float:
    p = svdistill.forward(model, x, feature_transform=ft)
    return float((p.argmax(1) == y).mean())


def utterances(x: np.ndarray, y: np.ndarray, size: int = 8):
    """Groups of `size` examples as 'utterances' (Kaldi archives hold utterances)."""
    feats, labels = {}, {}
    for i in range(0, len(x), size):
        key = f"u{i // size:05d}"
        feats[key] = x[i:i + size]
        labels[key] = y[i:i + size]
    return feats, labels


#: The same trainer settings for every model: Adam, and minibatches of 16 (a data set
#: this small needs small minibatches to get enough updates per epoch); Kaldi's newbob
#: schedule and the held-out 10% of the training utterances decide when to stop.
TRAIN = dict(optimizer="adam", learn_rate=0.001, minibatch_size=16, max_epochs=40)
#: The compressed size: 10% of the teacher's parameters (the output layer, 2,570
#: parameters, is kept whole: the budget's Frobenius-optimal ranks would starve it).
BUDGET = 0.1


def run(seed: int, out: str, verbose: bool, train=TRAIN) -> dict:
    xtr, xte, ytr, yte = load_digits(seed)
    ft = feature_transform(xtr)
    feats, labels = utterances(xtr, ytr)
    rng = np.random.default_rng(seed)
    log = (lambda s: print("    " + s, file=sys.stderr)) if verbose else None
    dims = [64, 256, 256, 10]
    row = {"seed": seed}
    t0 = time.perf_counter()

    teacher, _ = svdistill.distill(mlp(dims, rng), feats, labels=labels, feature_transform=ft, log=log,
                                   **train)
    teacher.write(os.path.join(out, "teacher.nnet"), binary=True)
    row["teacher"] = (accuracy(teacher, ft, xte, yte), teacher.num_params)

    compressed, _ = svdistill.compress(teacher, param_budget=BUDGET, skip_output_layer=True)
    row["compressed"] = (accuracy(compressed, ft, xte, yte), compressed.num_params)

    distilled, _ = svdistill.distill(compressed, feats, teachers=teacher, feature_transform=ft, log=log,
                                     **train)
    distilled.write(os.path.join(out, "distilled.nnet"), binary=True)
    row["distilled"] = (accuracy(distilled, ft, xte, yte), distilled.num_params)

    scratch, _ = svdistill.distill(reinit_like(compressed, rng), feats, labels=labels,
                                   feature_transform=ft, log=log, **train)
    row["labels only"] = (accuracy(scratch, ft, xte, yte), scratch.num_params)
    row["seconds"] = time.perf_counter() - t0
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for the models (default: a temporary folder)")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (data split and initialisation)")
    ap.add_argument("--verbose", action="store_true", help="print each training's per-epoch table")
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="svdistill-digits-")
    os.makedirs(out, exist_ok=True)
    rows = [run(int(s), out, a.verbose) for s in a.seeds.split(",")]
    names = ["teacher", "compressed", "distilled", "labels only"]
    print(f"{'model':<28} {'params':>8} " + " ".join(f"{'seed ' + str(r['seed']):>8}" for r in rows)
          + f" {'mean':>8}")
    what = {"teacher": "teacher 64-256-256-10",
            "compressed": "SVD to 10% of the params",
            "distilled": "SVD + distillation",
            "labels only": "same size, labels only"}
    for n in names:
        accs = [r[n][0] for r in rows]
        print(f"{what[n]:<28} {rows[0][n][1]:>8,} " + " ".join(f"{x:>8.2%}" for x in accs)
              + f" {np.mean(accs):>8.2%}")
    print(f"test accuracy on {len(load_digits(0)[1])} held-out digits; "
          f"{np.mean([r['seconds'] for r in rows]):.1f} s per seed; models in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
