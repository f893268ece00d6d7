#!/usr/bin/env python3
"""Training benchmark: frames/s of svdistill's C++ trainer against PyTorch (CPU)
training the same network with the same minibatch, side by side in one run.

Two jobs, both at minibatch 256 with SGD + momentum (gradients summed over the
minibatch, as Kaldi's nnet-train-frmshuff and svdistill do; torch uses
reduction="sum" and torch.optim.SGD, which applies momentum the same way):

  labels    frame-level cross-entropy training of the full network
            440 -> 6 x 2048 (Sigmoid) -> 8000 (Softmax)           (--dims)
  distill   the rank-256 SVD student of that network (every layer factored,
            --rank), trained on the full teacher's soft targets at T = 2:
            teacher forward + student forward/backward/update per minibatch

  svdistill   _core.Trainer.train(x, labels, opts) (one call per minibatch)
  torch       nn.Sequential(Linear, Sigmoid, ...), loss.backward(), SGD.step()

Before timing, one minibatch step is taken by both from the same weights and
the updated last-layer weights are compared (max |difference| relative to the
largest change), so both compute the same update. Reported: median frames/s over
--repeats, the ratio, and the implied GFLOP/s (6 x weights x frames for
training, + 2 x teacher weights x frames for the teacher's forward).

Goal (issue 6): >= 1.5x PyTorch CPU frames/s.
"""
from __future__ import annotations

import sys

import common

ENV_STATE = common.clean_env_reexec()  # before numpy is imported

import numpy as np  # noqa: E402

import svdistill  # noqa: E402
from svdistill import _core  # noqa: E402
from common import random_mlp, torch_sequential, goal, md_table, median  # noqa: E402
from svdistill.distill.engine import train_options  # noqa: E402

T = 2.0


def weights(model: svdistill.Model) -> int:
    return sum(c.weight.size for c in model.components if c.weight is not None)


def setup(job, teacher, student, lr, momentum, batch, rng):
    """(svdistill step, torch step, check) for one job; both start from the same weights."""
    import torch
    x = rng.standard_normal((batch, teacher.input_dim)).astype(np.float32)
    y = rng.integers(0, teacher.output_dim, batch).astype(np.int32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    trained = teacher if job == "labels" else student
    comps = [c.copy() for c in trained.components]
    teachers = [] if job == "labels" else [svdistill.Network(teacher)._net]
    tr = _core.Trainer([c._c for c in comps], teachers)
    net = torch_sequential(trained)
    tnet = torch_sequential(teacher).eval() if job == "distill" else None
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    ours_opts = train_options(learn_rate=lr, momentum=momentum, temperature=T)

    if job == "labels":
        def ours():
            tr.train(x, y, ours_opts.optimizer, ours_opts.loss)

        def theirs():
            loss = torch.nn.functional.cross_entropy(net(xt), yt, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        def ours():
            tr.train(x, None, ours_opts.optimizer, ours_opts.loss)

        def theirs():
            with torch.no_grad():
                q = torch.softmax(tnet(xt) / T, dim=1)
            logp = torch.log_softmax(net(xt) / T, dim=1)
            loss = -(T * T) * (q * logp).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return ours, theirs, comps, net


def update_difference(job, teacher, student, batch, rng) -> float:
    """One step of each from the same weights, with a learning rate large enough that
    the change is far above float32 rounding of the weights: max |difference of the
    updated last-layer weights| / max |change|."""
    trained = teacher if job == "labels" else student
    ours, theirs, comps, net = setup(job, teacher, student, 0.05 if job == "labels" else 0.02, 0.9, batch, rng)
    ours()
    theirs()
    # The last weight layer: the first ones of a deep random sigmoid net barely move.
    i = max(k for k, c in enumerate(trained.components) if c.weight is not None)
    w0 = trained.components[i].weight
    w_ours = comps[i].weight
    w_torch = [m for m in net if hasattr(m, "weight")][-1].weight.detach().numpy()
    change = np.abs(w_ours - w0).max()
    if change == 0:
        raise RuntimeError("the check step did not change the weights")
    return float(np.abs(w_ours - w_torch).max() / change)


def parse_dims(text: str) -> list:
    """"440,2048x6,8000" -> [440, 2048, 2048, 2048, 2048, 2048, 2048, 8000]."""
    out = []
    for part in text.split(","):
        width, _, times = part.partition("x")
        out += [int(width)] * (int(times) if times else 1)
    return out


def main() -> int:
    ap = common.base_parser(__doc__)
    ap.add_argument("--dims", default=None, help="layer dims (default 440,2048x6,8000)")
    ap.add_argument("--rank", type=int, default=256, help="rank of the distilled student (default 256)")
    ap.add_argument("--batch", type=int, default=256, help="minibatch (default 256)")
    ap.add_argument("--iters", type=int, default=None, help="minibatches per timed call (default 8)")
    ap.add_argument("--gap", type=float, default=0.25, help="idle seconds before each timed call")
    a = common.finish_args(ap.parse_args())
    dims = parse_dims(a.dims) if a.dims else (
        [440, 512, 512, 1000] if a.quick else [440] + [2048] * 6 + [8000])
    rank = min(a.rank, 64) if a.quick else a.rank
    iters = a.iters or (4 if a.quick else 8)

    import torch
    teacher = random_mlp(dims)
    student, _ = svdistill.compress(teacher, rank=rank)
    env = common.environment(ENV_STATE, {"extra_torch threads": torch.get_num_threads()})
    rng = np.random.default_rng(1)
    lr, momentum = 1e-4, 0.9  # small: the timing runs many steps on one minibatch
    rows, raw, goals = [], {}, []
    for job in ("labels", "distill"):
        rel = update_difference(job, teacher, student, a.batch, np.random.default_rng(2))
        ours, theirs, _, _ = setup(job, teacher, student, lr, momentum, a.batch, rng)
        times = common.round_robin({"svdistill": lambda: [ours() for _ in range(iters)],
                                    "torch": lambda: [theirs() for _ in range(iters)]},
                                   a.repeats, label=job, gap=a.gap)
        fps = {k: iters * a.batch / median(v) for k, v in times.items()}
        trained = teacher if job == "labels" else student
        flop_per_frame = 6.0 * weights(trained) + (2.0 * weights(teacher) if job == "distill" else 0.0)
        gflops = {k: flop_per_frame * f / 1e9 for k, f in fps.items()}
        raw[job] = {"times": times, "iters": iters, "fps": fps, "gflops": gflops,
                    "weights": weights(trained), "update_rel_diff_vs_torch": rel}
        what = (f"{'-'.join(map(str, dims))}, labels" if job == "labels"
                else f"rank-{rank} student ({weights(student):,} weights) from the teacher, T={T:g}")
        rows.append([job, what, f"{fps['svdistill']:,.0f}", f"{fps['torch']:,.0f}",
                     f"{fps['svdistill'] / fps['torch']:.2f}x", f"{gflops['svdistill']:.0f}",
                     f"{gflops['torch']:.0f}", f"{rel:.1e}"])
        goals.append([f"{job}: >= 1.5x torch", f"{fps['svdistill'] / fps['torch']:.2f}x",
                      goal(fps["svdistill"] >= 1.5 * fps["torch"])])
    lines = [f"## Training: frames/s at minibatch {a.batch} (median of {a.repeats})", "",
             md_table(["job", "network", "svdistill", "torch", "ratio", "GFLOP/s", "torch GFLOP/s",
                       "update diff"], rows), "",
             md_table(["goal", "measured", "met"], goals), "", "command: " + common.command_line(),
             "", common.format_environment(env)]
    print("\n".join(lines))
    common.write_json(a.json, {"environment": env, "dims": dims, "rank": rank, "batch": a.batch,
                               "results": raw, "repeats": a.repeats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
