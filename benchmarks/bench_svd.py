#!/usr/bin/env python3
"""Truncated-SVD benchmark: svdistill's randomized SVD against scikit-learn,
torch and exact LAPACK SVDs, in time and in error relative to the optimum.

Matrices: 2048x2048, 4096x4096 and 8000x2048 float32 from gen_nnet.py's
random_lowrank_matrix (realistic DNN-layer spectra, seeded); ranks k = 128, 256, 512.

Methods (library defaults unless stated):
  svdistill            svdistill.linalg.truncated_svd(A, k, method="randomized", seed=0)
  svdistill fast       the same with n_iter=1, oversamples=k
  sklearn              sklearn.utils.extmath.randomized_svd(A, n_components=k, random_state=0)
  torch                torch.svd_lowrank(torch.from_numpy(A), q=k, niter=4)  (q includes no
                       oversampling; run as given)
  numpy exact          numpy.linalg.svd(A, full_matrices=False) in float32 (sgesdd)
  scipy exact          scipy.linalg.svd(A, full_matrices=False, lapack_driver="gesdd")
The exact SVDs do not depend on k and are slow: they run on the first matrix size
only (2048x2048) unless --exact-all.

Error: ||A - U diag(s) Vt||_F (float64) divided by the optimal rank-k error
sqrt(sum_{i>k} sigma_i^2), sigma from a float64 SVD of A (cached on disk).

GEMM: numpy's float32 GEMM rate on the shape of the sketch product (m x n times
n x l) and on a square product, and the GFLOP/s implied by svdistill's time
(its BLAS-3 work with l = k + p, p = max(32, k // 4), q = 2 by default —
cpp/linalg/svd.h; the fast row has l = 2k, q = 1: on A, 2 m n l (2q + 2)
flops; on the Gram matrix of the smaller side, which the core picks where
that costs less, m n d + (q + 1) 2 d^2 l + 2 m n l with d = min(m, n)). The
implied rate is a lower bound on the core's GEMM rate (the time also covers
QR, the small SVD and the sketch).

    python benchmarks/bench_svd.py              # full sizes (about 5 minutes)
    python benchmarks/bench_svd.py --quick      # 512x512 and 1024x512, k = 32, 64
"""
from __future__ import annotations

import common

ENV_STATE = common.clean_env_reexec()  # before numpy is imported

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402

import svdistill  # noqa: E402,F401
from svdistill import linalg  # noqa: E402

from common import log, median, md_table, goal  # noqa: E402

GOAL_ERR = 1.01          # error <= 1.01x optimal
GOAL_VS_EXACT = 20.0     # >= 20x faster than numpy's exact SVD
GOAL_VS_BEST = 2.0       # >= 2x faster than the best of sklearn and torch ...
ERR_TIE = 5e-4           # ... at equal (within 0.05%) or better error
GOAL_GEMM = 0.9          # core GEMM >= 90% of numpy's

# svdistill's randomized defaults (cpp/linalg/svd.h: default_oversamples, kDefaultIter)
def default_oversamples(k: int) -> int:
    return max(32, k // 4)


DEFAULT_ITER = 2

SVD = "svdistill"
FAST = "svdistill fast (n_iter=1, p=k)"
SKL = "sklearn randomized_svd"
TORCH = "torch.svd_lowrank (niter=4)"
NPX = "numpy.linalg.svd (exact)"
SPX = "scipy.linalg.svd gesdd (exact)"


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    out = []
    for t in text.split(","):
        m, n = t.lower().split("x")
        out.append((int(m), int(n)))
    return out


def get_matrix(workdir: Path, m: int, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The float32 test matrix and its float64 singular values, cached on disk."""
    base = workdir / f"svd-matrix-{m}x{n}.seed{seed}"
    fa, fs = base.with_suffix(".npy"), Path(str(base) + ".sigma.npy")
    if fa.exists():
        a = np.load(fa)
    else:
        log(f"generating the {m}x{n} matrix (cached in {fa}) ...")
        gen = common.gen_nnet_module()
        a, _ = gen.random_lowrank_matrix(m, n, np.random.default_rng([seed, m, n]))
        np.save(str(fa) + ".tmp.npy", a)
        Path(str(fa) + ".tmp.npy").replace(fa)
    if fs.exists():
        s = np.load(fs)
    else:
        log(f"float64 singular values of the {m}x{n} matrix (cached in {fs}) ...")
        s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
        np.save(str(fs) + ".tmp.npy", s)
        Path(str(fs) + ".tmp.npy").replace(fs)
    return a, s


def rel_to_optimal(a64: np.ndarray, sigma: np.ndarray, u, s, vt, k: int) -> Dict[str, float]:
    u = np.asarray(u)[:, :k].astype(np.float64)
    s = np.asarray(s)[:k].astype(np.float64)
    vt = np.asarray(vt)[:k].astype(np.float64)
    err = float(np.linalg.norm(a64 - (u * s) @ vt))
    opt = float(np.sqrt(np.sum(sigma[k:] ** 2)))
    return {"err": err, "opt": opt, "ratio": err / opt if opt > 0 else float("nan"),
            "rel_fro": err / float(np.linalg.norm(sigma))}


def gemm_rate(m: int, n: int, l: int, repeats: int, gap: float = 0.0, seed: int = 1) -> Dict[str, Any]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n), dtype=np.float32)
    b = rng.standard_normal((n, l), dtype=np.float32)
    c = np.empty((m, l), dtype=np.float32)
    times = common.round_robin({"gemm": lambda: np.matmul(a, b, out=c)}, repeats, gap=gap)["gemm"]
    t = median(times)
    return {"shape": [m, n, l], "times_s": times, "median_s": t, "gflops": 2.0 * m * n * l / t / 1e9}


def sketch_route(A: np.ndarray, k: int, p: int, q: int) -> str:
    """Which way the core ran the power iterations ("direct" on A, or "gram")."""
    return svdistill._core.truncated_svd(A, k, "randomized", p, q, 0)[5]


def sketch_flops(m: int, n: int, l: int, q: int, route: str) -> float:
    """The BLAS-3 products of the sketch (cpp/linalg/svd.cc, Sketcher): on A,
    2q + 2 products m x n x l; on the Gram matrix, its syrk (m n d with
    d = min(m, n)), q + 1 products d x d x l and one m x n x l projection."""
    if route == "gram":
        d = min(m, n)
        return float(m) * n * d + (q + 1) * 2.0 * d * d * l + 2.0 * m * n * l
    return 2.0 * m * n * l * (2 * q + 2)


def run_all(a, sizes, ks) -> Dict[str, Any]:
    import scipy.linalg
    import torch
    from sklearn.utils.extmath import randomized_svd

    results: Dict[str, Any] = {"sizes": []}
    for si, (m, n) in enumerate(sizes):
        A, sigma = get_matrix(a.workdir, m, n, a.seed)
        A64 = A.astype(np.float64)
        T = torch.from_numpy(A)
        entry: Dict[str, Any] = {"m": m, "n": n, "ks": {}, "exact": None}
        if si == 0 or a.exact_all:
            last: Dict[str, Any] = {}
            fns = {
                NPX: lambda: last.__setitem__(NPX, np.linalg.svd(A, full_matrices=False)),
                SPX: lambda: last.__setitem__(SPX, scipy.linalg.svd(A, full_matrices=False,
                                                                    lapack_driver="gesdd")),
            }
            times = common.round_robin(fns, a.repeats, label=f"{m}x{n} exact", gap=a.gap)
            entry["exact"] = {name: {"times_s": times[name], "median_s": median(times[name]),
                                     "err": {str(k): rel_to_optimal(A64, sigma, *last[name], k) for k in ks}}
                              for name in fns}
            del last
        for k in ks:
            if k > min(m, n):
                continue
            last = {}

            def torch_svd(k=k):
                torch.manual_seed(0)
                u, s, v = torch.svd_lowrank(T, q=k, niter=4)
                return u.numpy(), s.numpy(), v.numpy().T

            methods: Dict[str, Callable[[], Any]] = {
                SVD: lambda k=k: linalg.truncated_svd(A, k, method="randomized", seed=0),
                FAST: lambda k=k: linalg.truncated_svd(A, k, method="randomized", n_iter=1,
                                                       oversamples=k, seed=0),
                SKL: lambda k=k: randomized_svd(A, n_components=k, random_state=0),
                TORCH: torch_svd,
            }
            fns = {name: (lambda f=f, name=name: last.__setitem__(name, f())) for name, f in methods.items()}
            times = common.round_robin(fns, a.repeats, label=f"{m}x{n} k={k}", gap=a.gap)
            per: Dict[str, Any] = {}
            for name in methods:
                per[name] = {"times_s": times[name], "median_s": median(times[name]),
                             "err": rel_to_optimal(A64, sigma, *last[name], k),
                             "dtype_u": str(np.asarray(last[name][0]).dtype)}
            l_def, q_def = k + default_oversamples(k), DEFAULT_ITER
            per[SVD]["route"] = sketch_route(A, k, -1, q_def)
            per[FAST]["route"] = sketch_route(A, k, k, 1)
            per[SVD]["gemm_flops"] = sketch_flops(m, n, l_def, q_def, per[SVD]["route"])
            per[FAST]["gemm_flops"] = sketch_flops(m, n, 2 * k, 1, per[FAST]["route"])
            for name in (SVD, FAST):
                per[name]["implied_gflops"] = per[name]["gemm_flops"] / per[name]["median_s"] / 1e9
            per["numpy_gemm"] = gemm_rate(m, n, l_def, a.repeats, a.gap)
            entry["ks"][str(k)] = per
            del last
        results["sizes"].append(entry)
    sq = 1024 if a.quick else 4096
    log(f"numpy GEMM {sq}^3 ...")
    results["numpy_gemm_square"] = gemm_rate(sq, sq, sq, a.repeats, a.gap)
    return results


def summarize(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for e in res["sizes"]:
        for k, per in e["ks"].items():
            sv = per[SVD]
            best = min((SKL, TORCH), key=lambda nme: per[nme]["median_s"])
            r = {"m": e["m"], "n": e["n"], "k": int(k), "svd_s": sv["median_s"], "svd_err": sv["err"]["ratio"],
                 "fast_s": per[FAST]["median_s"], "fast_err": per[FAST]["err"]["ratio"],
                 "best": best, "best_s": per[best]["median_s"], "best_err": per[best]["err"]["ratio"],
                 "best_over_svd": per[best]["median_s"] / sv["median_s"],
                 "implied_gflops": sv["implied_gflops"], "numpy_gemm_gflops": per["numpy_gemm"]["gflops"]}
            r["gemm_frac"] = r["implied_gflops"] / r["numpy_gemm_gflops"]
            if e["exact"]:
                for key, name in (("numpy", NPX), ("scipy", SPX)):
                    r[f"{key}_exact_s"] = e["exact"][name]["median_s"]
                    r[f"{key}_exact_over_svd"] = e["exact"][name]["median_s"] / sv["median_s"]
            rows.append(r)
    return rows


def _g(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def report(out: Dict[str, Any]) -> str:
    res = out["results"]
    parts = [f"### bench_svd ({'QUICK, ' if out['quick'] else ''}medians of {out['repeats']} runs)", "",
             common.format_environment(out["environment"]), ""]
    for e in res["sizes"]:
        m, n = e["m"], e["n"]
        rows = []
        for k, per in e["ks"].items():
            t0 = per[SVD]["median_s"]
            for name in (SVD, FAST, SKL, TORCH):
                p = per[name]
                label = f"{name} ({p['route']})" if "route" in p else name
                rows.append([k, label, f"{p['median_s']:.4f}", f"{p['err']['ratio']:.4f}",
                             f"{p['median_s'] / t0:.2f}x",
                             _g(p["implied_gflops"]) if "implied_gflops" in p else ""])
            if e["exact"]:
                for name in (NPX, SPX):
                    p = e["exact"][name]
                    rows.append([k, name, f"{p['median_s']:.4f}", f"{p['err'][k]['ratio']:.4f}",
                                 f"{p['median_s'] / t0:.1f}x", ""])
        parts += [f"**{m}x{n} float32**", "",
                  md_table(["k", "method", "s", "err / optimal", "time ÷ svdistill", "implied GEMM GFLOP/s"],
                           rows, "rlrrrr"), ""]
    rows, goals = [], []
    for r in out["summary"]:
        shape = f"{r['m']}x{r['n']}"
        rows.append([shape, r["k"], f"{r['svd_s']:.4f}", f"{r['svd_err']:.4f}",
                     f"{r['numpy_exact_over_svd']:.1f}x" if "numpy_exact_over_svd" in r else "-",
                     f"{r['scipy_exact_over_svd']:.1f}x" if "scipy_exact_over_svd" in r else "-",
                     f"{r['best'].split()[0]} {r['best_s']:.4f}", f"{r['best_over_svd']:.2f}x", f"{r['best_err']:.4f}",
                     f"{_g(r['implied_gflops'])} / {_g(r['numpy_gemm_gflops'])} = {r['gemm_frac']:.0%}"])
        goals.append([f"{shape} k={r['k']}", f"{r['svd_err']:.4f}", goal(r["svd_err"] <= GOAL_ERR),
                      (f"{r['numpy_exact_over_svd']:.1f}x " + goal(r["numpy_exact_over_svd"] >= GOAL_VS_EXACT))
                      if "numpy_exact_over_svd" in r else "-",
                      f"{r['best_over_svd']:.2f}x " + goal(r["best_over_svd"] >= GOAL_VS_BEST and
                                                           r["svd_err"] <= r["best_err"] + ERR_TIE),
                      f"{r['gemm_frac']:.0%} " + ("yes" if r["gemm_frac"] >= GOAL_GEMM else "(lower bound)")])
    parts += ["**Ratios** (time ratios > 1: svdistill is faster)", "",
              md_table(["matrix", "k", "svdistill s", "err/opt", "numpy exact ÷ svdistill",
                        "scipy exact ÷ svdistill", "best of sklearn/torch, s", "best ÷ svdistill", "best err/opt",
                        "implied / numpy GEMM GFLOP/s"], rows, "lrrrrrrrrr"), ""]
    sq = res["numpy_gemm_square"]
    parts += [f"numpy float32 GEMM: {sq['gflops']:.0f} GFLOP/s on {'x'.join(map(str, sq['shape']))} "
              "(the per-size sketch-shape rates are in the ratios table).", ""]
    parts += ["**Goals**", "",
              md_table(["case", "err/opt", f"<= {GOAL_ERR}", f">= {GOAL_VS_EXACT:.0f}x numpy exact",
                        f">= {GOAL_VS_BEST:.0f}x best at equal error", f"GEMM >= {GOAL_GEMM:.0%} of numpy"],
                       goals, "lrllll")]
    return "\n".join(parts)


def main() -> int:
    ap = common.base_parser(__doc__)
    ap.add_argument("--sizes", default=None, help="matrix shapes (default 2048x2048,4096x4096,8000x2048)")
    ap.add_argument("--ks", default=None, help="ranks (default 128,256,512)")
    ap.add_argument("--exact-all", action="store_true", help="run the exact SVDs on every size, not just the first")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every library (svdistill, both OpenBLAS pools, torch); default: theirs")
    ap.add_argument("--gap", type=float, default=0.25,
                    help="idle seconds before each timed call, so the previous library's spinning "
                         "worker threads are asleep (default 0.25)")
    ap.add_argument("--seed", type=int, default=0)
    a = common.finish_args(ap.parse_args())
    sizes = parse_sizes(a.sizes or ("512x512,1024x512" if a.quick else "2048x2048,4096x4096,8000x2048"))
    ks = [int(x) for x in (a.ks or ("32,64" if a.quick else "128,256,512")).split(",")]

    import torch
    limiter = None
    if a.threads:
        from threadpoolctl import threadpool_limits
        linalg.set_num_threads(a.threads)
        torch.set_num_threads(a.threads)
        limiter = threadpool_limits(a.threads)
    env = common.environment(ENV_STATE, {"extra_torch threads": torch.get_num_threads()})
    t = time.perf_counter()
    res = run_all(a, sizes, ks)
    out = {"environment": env, "repeats": a.repeats, "quick": a.quick, "sizes": sizes, "ks": ks,
           "defaults": {"oversamples": "max(32, k // 4)", "n_iter": DEFAULT_ITER},
           "results": res, "seconds": time.perf_counter() - t}
    out["summary"] = summarize(res)
    print(report(out))
    common.write_json(a.json, out)
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
