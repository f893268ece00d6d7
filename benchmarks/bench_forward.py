#!/usr/bin/env python3
"""Forward-pass benchmark: frames/s of svdistill's C++ network against numpy
and PyTorch (CPU) running the same network, side by side in one run.

Network: 440 -> 6 x 2048 (Sigmoid) -> 8000 (Softmax), float32 weights
(--dims to change), batches of 256 and 4096 frames. Each library computes the
same thing: y = softmax(W7 sigmoid(... sigmoid(W1 x + b1) ...) + b7).

  svdistill   svdistill.Network(model)(x)              (model kept in the core)
  numpy       x @ W.T + b, 1 / (1 + exp(-z)), softmax   (float32 throughout)
  torch       torch.nn.Sequential(Linear, Sigmoid, ..., Softmax) under no_grad

Reported: median frames/s over --repeats, ratios against PyTorch and numpy,
the implied GFLOP/s (2 x frames x weights / time) next to numpy's float32 GEMM
rate on the largest layer's shape (batch x 2048 x 2048). Outputs are checked
to agree (max |difference| of posteriors) before anything is timed.

Goals (issue 5): >= 1.5x PyTorch CPU frames/s at both batch sizes; >= 75% of
numpy's GEMM rate at batch 4096.
"""
from __future__ import annotations

import sys
import time

import common

ENV_STATE = common.clean_env_reexec()  # before numpy is imported

import numpy as np  # noqa: E402

import svdistill  # noqa: E402
from svdistill import linalg  # noqa: E402
from common import goal, log, md_table, median  # noqa: E402


def build(dims, seed=0):
    rng = np.random.default_rng(seed)
    ws, bs, comps = [], [], []
    for i in range(len(dims) - 1):
        w = (rng.standard_normal((dims[i + 1], dims[i])) / np.sqrt(dims[i])).astype(np.float32)
        b = (rng.standard_normal(dims[i + 1]) * 0.1).astype(np.float32)
        ws.append(w)
        bs.append(b)
        comps.append(svdistill.Component.affine(w, b))
        comps.append(svdistill.Component.activation("Sigmoid" if i < len(dims) - 2 else "Softmax", dims[i + 1]))
    return ws, bs, svdistill.Model(comps)


def numpy_forward(ws, bs, x):
    h = x
    for i, (w, b) in enumerate(zip(ws, bs)):
        z = h @ w.T
        z += b
        if i < len(ws) - 1:
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1
            np.reciprocal(z, out=z)
        else:
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
        h = z
    return h


def torch_model(ws, bs):
    import torch
    layers = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        layers.append(torch.nn.Sigmoid() if i < len(ws) - 1 else torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*layers).eval()


def main() -> int:
    ap = common.base_parser(__doc__)
    ap.add_argument("--dims", default=None, help="layer dims (default 440,2048x6,8000)")
    ap.add_argument("--batches", default=None, help="batch sizes (default 256,4096)")
    ap.add_argument("--gap", type=float, default=0.25, help="idle seconds before each timed call")
    ap.add_argument("--iters", type=int, default=None,
                    help="batches per timed call (default: enough for ~16k frames)")
    a = common.finish_args(ap.parse_args())
    if a.dims:
        dims = [int(x) for x in a.dims.split(",")]
    else:
        dims = [440, 512, 512, 1000] if a.quick else [440] + [2048] * 6 + [8000]
    batches = [int(x) for x in (a.batches or ("256,1024" if a.quick else "256,4096")).split(",")]

    import torch
    torch.set_grad_enabled(False)
    ws, bs, model = build(dims)
    net = svdistill.Network(model)
    tm = torch_model(ws, bs)
    weights = sum(w.size for w in ws)
    env = common.environment(ENV_STATE, {"extra_torch threads": torch.get_num_threads()})
    rng = np.random.default_rng(1)
    rows, raw = [], {}
    for batch in batches:
        x = rng.standard_normal((batch, dims[0])).astype(np.float32)
        xt = torch.from_numpy(x)
        ref = numpy_forward(ws, bs, x)
        diffs = {"svdistill": float(np.abs(net(x) - ref).max()),
                 "torch": float(np.abs(tm(xt).numpy() - ref).max())}
        iters = a.iters or max(1, 16384 // batch)
        fns = {"svdistill": lambda: [net(x) for _ in range(iters)],
               "numpy": lambda: [numpy_forward(ws, bs, x) for _ in range(iters)],
               "torch": lambda: [tm(xt) for _ in range(iters)]}
        times = common.round_robin(fns, a.repeats, label=f"batch {batch}", gap=a.gap)
        fps = {k: iters * batch / median(v) for k, v in times.items()}
        # numpy's GEMM rate on the largest hidden layer's shape, for the 75% goal.
        big = max(range(len(ws)), key=lambda i: ws[i].size)
        hin = rng.standard_normal((batch, ws[big].shape[1])).astype(np.float32)
        out = np.empty((batch, ws[big].shape[0]), np.float32)
        g = common.round_robin({"gemm": lambda: np.matmul(hin, ws[big].T, out=out)}, a.repeats, gap=a.gap)["gemm"]
        gemm_rate = 2.0 * batch * ws[big].size / median(g) / 1e9
        implied = {k: 2.0 * weights * f / 1e9 for k, f in fps.items()}
        raw[batch] = {"times": times, "iters": iters, "fps": fps, "gflops": implied,
                      "numpy_gemm_gflops": gemm_rate, "max_abs_diff_vs_numpy": diffs}
        rows.append([batch, f"{fps['svdistill']:,.0f}", f"{fps['torch']:,.0f}", f"{fps['numpy']:,.0f}",
                     f"{fps['svdistill'] / fps['torch']:.2f}x", f"{fps['svdistill'] / fps['numpy']:.2f}x",
                     f"{implied['svdistill']:.0f}", f"{gemm_rate:.0f}",
                     f"{implied['svdistill'] / gemm_rate:.0%}",
                     f"{diffs['svdistill']:.1e}"])
    lines = ["## Forward pass: frames/s (median of %d)" % a.repeats, "",
             f"network {'-'.join(map(str, dims))}, {weights:,} weights", "",
             md_table(["batch", "svdistill", "torch", "numpy", "vs torch", "vs numpy",
                       "GFLOP/s", "numpy GEMM GFLOP/s", "of GEMM", "max|diff|"], rows), ""]
    goals = []
    for batch in batches:
        r = raw[batch]
        goals.append([f"batch {batch}: >= 1.5x torch", f"{r['fps']['svdistill'] / r['fps']['torch']:.2f}x",
                      goal(r["fps"]["svdistill"] >= 1.5 * r["fps"]["torch"])])
    last = raw[batches[-1]]
    goals.append([f"batch {batches[-1]}: >= 75% of numpy GEMM",
                  f"{last['gflops']['svdistill'] / last['numpy_gemm_gflops']:.0%}",
                  goal(last["gflops"]["svdistill"] >= 0.75 * last["numpy_gemm_gflops"])])
    lines += [md_table(["goal", "measured", "met"], goals), "", "command: " + common.command_line(),
              "", common.format_environment(env)]
    print("\n".join(lines))
    common.write_json(a.json, {"environment": env, "dims": dims, "results": raw, "repeats": a.repeats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
