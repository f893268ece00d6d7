#!/usr/bin/env python3
"""Reader/writer benchmark: svdistill against numpy/pandas text parsing, the raw
file read, and the memory of a streaming copy.

(a) Text parse, ONE core: a 2048x2048 float32 matrix written as Kaldi rows.
    svdistill.read() of a model file holding just that one <AffineTransform>
    (MB/s of the whole file) vs numpy.loadtxt(dtype=float32) and
    pandas.read_csv(engine="c", sep=" ", header=None, dtype=float32) of the same
    rows (brackets stripped, one row per line). All files are in the page cache.
    Goals: >= 800 MB/s and >= 3.5x numpy.loadtxt.
(b) Whole-model text parse, all cores: svdistill.iter_components over the
    `large` Kaldi model of gen_nnet.py (~403 MB). Goal: >= 1.5 GB/s.
(c) Binary read: svdistill.iter_components over the Kaldi-binary version of the
    same model (made by `svdistill copy --binary=true`) vs a raw read of that
    file in 16 MB chunks into a reused page-aligned buffer (the fastest raw
    read: into a buffer that malloc places 16 bytes past a page boundary, as a
    large bytearray, the kernel's copy ran ~4x slower on this machine).
    Goal: >= 50% of the raw speed.
(d) Peak RSS of `svdistill copy` (text->text, text->binary) in a fresh child
    process, for models with 2, 4 and 8 hidden layers of 2048, against the bare
    interpreter (`python -c 'import svdistill'`) + 3x the largest layer's
    float32 bytes. Goal: below that line, and flat in the number of layers.

Medians over --repeats (after one untimed warm-up); nothing runs concurrently.
The script re-executes itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
(unless --keep-env). Generated models are cached in --workdir.

    python benchmarks/bench_io.py                 # full sizes (a few minutes)
    python benchmarks/bench_io.py --quick         # small sizes, < 1 minute
"""
from __future__ import annotations

import common

ENV_STATE = common.clean_env_reexec()  # before numpy is imported

import mmap  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import numpy as np  # noqa: E402

import svdistill  # noqa: E402
from svdistill import linalg  # noqa: E402

from common import MB, log, median, md_table, goal  # noqa: E402

GOAL_PARSE_MBPS = 800.0
GOAL_VS_LOADTXT = 3.5
GOAL_MODEL_MBPS = 1500.0
GOAL_BINARY_FRAC = 0.5
CHUNK = 16 << 20


# --------------------------------------------------------------------------
# (a) one matrix, one core
# --------------------------------------------------------------------------
def matrix_files(workdir: Path, n: int, seed: int) -> Dict[str, Path]:
    """A Kaldi text model with one n x n <AffineTransform> (gen_nnet's writer and
    spectra), and the same matrix rows without brackets, one row per line."""
    model = workdir / f"io-affine-{n}x{n}.seed{seed}.kaldi.txt"
    rows = workdir / f"io-affine-{n}x{n}.seed{seed}.rows.txt"
    if not model.exists():
        log(f"generating {model.name} ...")
        gen = common.gen_nnet_module()
        rng = np.random.default_rng(seed)
        w, _ = gen.random_lowrank_matrix(n, n, rng)
        b = (rng.standard_normal(n) * 0.1).astype(np.float32)
        tmp = model.with_name(model.name + ".tmp")
        with open(tmp, "w", buffering=1 << 22) as f:
            f.write("<Nnet> \n")
            gen.write_affine_kaldi(f, w, b)
            f.write("</Nnet> \n")
        os.replace(tmp, model)
    if not rows.exists():
        with open(model) as f:
            lines = f.read().split("\n")
        start = next(i for i, ln in enumerate(lines) if ln.rstrip().endswith("[")) + 1
        body = [ln.strip() for ln in lines[start:start + n]]
        body[-1] = body[-1].rstrip("]").strip()
        assert all(r and "[" not in r and "]" not in r for r in body)
        tmp = rows.with_name(rows.name + ".tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(body) + "\n")
        os.replace(tmp, rows)
    return {"model": model, "rows": rows}


def bench_parse_one_core(a, files: Dict[str, Path]) -> Dict[str, Any]:
    import pandas as pd
    model, rows = files["model"], files["rows"]
    for p in (model, rows):
        common.warm(p)
    sizes = {"svdistill": model.stat().st_size, "numpy.loadtxt": rows.stat().st_size,
             "pandas.read_csv": rows.stat().st_size}

    def sv():
        return svdistill.read(str(model))

    def npl():
        return np.loadtxt(str(rows), dtype=np.float32)

    def pdr():
        return pd.read_csv(str(rows), engine="c", sep=" ", header=None, dtype=np.float32)

    # the three parse the same numbers
    w_sv = sv().components[0].weight
    w_np = npl()
    w_pd = pdr().to_numpy()
    check = {"shape": list(w_sv.shape),
             "numpy_equal_svdistill": bool(np.array_equal(w_np, w_sv)),
             "pandas_max_abs_diff": float(np.max(np.abs(w_pd - w_sv)))}

    linalg.set_num_threads(1)
    try:
        times = common.round_robin({"svdistill": sv, "numpy.loadtxt": npl, "pandas.read_csv": pdr},
                                   a.repeats, label="(a) one matrix, one core")
    finally:
        linalg.set_num_threads(0)
    res = {"bytes": sizes, "times_s": times, "check": check, "files": {k: str(v) for k, v in files.items()}}
    res["median_s"] = {k: median(v) for k, v in times.items()}
    res["mbps"] = {k: sizes[k] / res["median_s"][k] / MB for k in times}
    return res


# --------------------------------------------------------------------------
# (b) whole model, all cores; (c) binary vs raw read
# --------------------------------------------------------------------------
def consume(path: Path) -> int:
    n = 0
    for _ in svdistill.iter_components(str(path)):
        n += 1
    return n


def raw_read(path: Path, buf: mmap.mmap) -> int:
    return common.warm(path, buf=buf)


def bench_model(a, text: Path, binary: Path) -> Dict[str, Any]:
    ncores = linalg.get_num_threads()
    buf = mmap.mmap(-1, CHUNK)  # page-aligned (see the module docstring)
    for p in (text, binary):
        common.warm(p)
    n_text, n_bin = consume(text), consume(binary)
    assert n_text == n_bin, (n_text, n_bin)

    def with_threads(k, fn):
        def run():
            linalg.set_num_threads(k)
            try:
                return fn()
            finally:
                linalg.set_num_threads(0)
        return run

    fns = {
        f"text: svdistill.iter_components ({ncores} threads)": with_threads(ncores, lambda: consume(text)),
        "text: svdistill.iter_components (1 thread)": with_threads(1, lambda: consume(text)),
        "text: raw read, 16 MB chunks": lambda: raw_read(text, buf),
        f"binary: svdistill.iter_components ({ncores} threads)": with_threads(ncores, lambda: consume(binary)),
        "binary: raw read, 16 MB chunks": lambda: raw_read(binary, buf),
    }
    times = common.round_robin(fns, a.repeats, label="(b)/(c) whole model")
    sizes = {k: (binary if k.startswith("binary") else text).stat().st_size for k in fns}
    res = {"text": str(text), "binary": str(binary), "components": n_text, "threads": ncores,
           "bytes": sizes, "times_s": times}
    res["median_s"] = {k: median(v) for k, v in times.items()}
    res["mbps"] = {k: sizes[k] / res["median_s"][k] / MB for k in times}
    return res


def ensure_binary(text: Path, logdir: Path) -> Path:
    out = text.with_suffix(".bin")
    if not out.exists():
        log(f"making {out.name} with svdistill copy --binary=true ...")
        common.run_measured(common.svdistill_cmd() + ["copy", "--binary=true", str(text), str(out)],
                            logdir, "make-binary")
    return out


# --------------------------------------------------------------------------
# (d) peak RSS of a streaming copy
# --------------------------------------------------------------------------
def bench_copy_rss(a, width: int, hidden_counts: List[int]) -> Dict[str, Any]:
    logdir = a.workdir / "logs"
    scratch = a.workdir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    interp = common.interpreter_rss(logdir, a.repeats)
    models = []
    for h in hidden_counts:
        dims = [440] + [width] * h + [width]
        path = common.ensure_model(a.workdir, dims=dims, style="kaldi")
        largest = max(dims[i] * dims[i + 1] for i in range(len(dims) - 1)) * 4
        models.append({"hidden": h, "dims": dims, "path": path, "bytes": path.stat().st_size,
                       "largest_layer_bytes": largest})
    cases = {"text->text": (["copy"], ".txt"), "text->binary": (["copy", "--binary=true"], ".bin")}
    rows = []
    for m in models:
        common.warm(m["path"])
        runs: Dict[str, List[Dict[str, Any]]] = {c: [] for c in cases}
        for r in range(a.repeats):
            for c, (args, ext) in cases.items():
                out = scratch / f"copy-out{ext}"
                runs[c].append(common.run_measured(common.svdistill_cmd() + args + [str(m["path"]), str(out)],
                                                   logdir, f"copy-{m['hidden']}-{ext[1:]}"))
                out.unlink()
        log(f"  (d) copy of {m['hidden']} hidden layers: done")
        limit = interp["rss_mb"] + 3 * m["largest_layer_bytes"] / MB
        rows.append({**{k: v for k, v in m.items() if k != "path"}, "path": str(m["path"]), "runs": runs,
                     "rss_mb": {c: median(x["rss_mb"] for x in v) for c, v in runs.items()},
                     "wall_s": {c: median(x["wall_s"] for x in v) for c, v in runs.items()},
                     "limit_mb": limit})
    peaks = [max(r["rss_mb"].values()) for r in rows]
    largest = max(m["largest_layer_bytes"] for m in models)
    spread = max(peaks) - min(peaks)
    return {"interpreter": interp, "models": rows, "spread_mb": spread,
            "flat": spread <= 0.5 * largest / MB,
            "flat_rule": "max - min of peak RSS over the models <= half the largest layer's float32 bytes"}


# --------------------------------------------------------------------------
def main() -> int:
    ap = common.base_parser(__doc__)
    ap.add_argument("--matrix-size", type=int, default=None, help="n of the n x n matrix of (a) (default 2048)")
    ap.add_argument("--model-size", default="large", help="gen_nnet --size preset for (b)/(c) (default large)")
    ap.add_argument("--rss-width", type=int, default=None, help="hidden width of the (d) models (default 2048)")
    ap.add_argument("--rss-layers", default="2,4,8", help="hidden-layer counts of the (d) models")
    ap.add_argument("--parts", default="abcd", help="which parts to run (default abcd)")
    ap.add_argument("--seed", type=int, default=0)
    a = common.finish_args(ap.parse_args())
    n = a.matrix_size or (512 if a.quick else 2048)
    width = a.rss_width or (512 if a.quick else 2048)
    hidden = [int(x) for x in a.rss_layers.split(",")]
    env = common.environment(ENV_STATE)
    out: Dict[str, Any] = {"environment": env, "repeats": a.repeats, "quick": a.quick}

    if "a" in a.parts:
        out["a_parse_one_core"] = bench_parse_one_core(a, matrix_files(a.workdir, n, a.seed))
    if "b" in a.parts or "c" in a.parts:
        if a.quick:
            text = common.ensure_model(a.workdir, dims=[440, 512, 512, 913], style="kaldi")
        else:
            text = common.ensure_model(a.workdir, size=a.model_size, style="kaldi")
        out["bc_model"] = bench_model(a, text, ensure_binary(text, a.workdir / "logs"))
    if "d" in a.parts:
        out["d_copy_rss"] = bench_copy_rss(a, width, hidden)

    print(report(out, n, width))
    common.write_json(a.json, out)
    return 0


def report(out: Dict[str, Any], n: int, width: int) -> str:
    env = out["environment"]
    parts = [f"### bench_io ({'QUICK, ' if out['quick'] else ''}medians of {out['repeats']} runs)", "",
             common.format_environment(env), ""]
    goals = []
    if "a_parse_one_core" in out:
        r = out["a_parse_one_core"]
        sv = r["mbps"]["svdistill"]
        rows = []
        what = {"svdistill": f"`svdistill.read`: model file, one {n}x{n} AffineTransform",
                "numpy.loadtxt": "`numpy.loadtxt(dtype=float32)`: the same rows, no brackets",
                "pandas.read_csv": "`pandas.read_csv(engine=\"c\", sep=\" \", dtype=float32)`: same rows"}
        for k in ("svdistill", "numpy.loadtxt", "pandas.read_csv"):
            rows.append([what[k], f"{r['bytes'][k] / MB:.1f}", f"{r['median_s'][k] * 1e3:.1f}",
                         f"{r['mbps'][k]:.0f}", "1.00x" if k == "svdistill" else f"{sv / r['mbps'][k]:.2f}x"])
        parts += [f"**(a) Text parse of a {n}x{n} float32 matrix, one core** (page cache warm)", "",
                  md_table(["parser: input", "MB", "ms", "MB/s", "svdistill MB/s ÷ this"], rows, "lrrrr"), ""]
        goals.append(["(a) text parse, one core", f"{sv:.0f} MB/s", f">= {GOAL_PARSE_MBPS:.0f} MB/s",
                      goal(sv >= GOAL_PARSE_MBPS)])
        ratio = sv / r["mbps"]["numpy.loadtxt"]
        goals.append(["(a) vs numpy.loadtxt (MB/s ratio)", f"{ratio:.2f}x", f">= {GOAL_VS_LOADTXT}x",
                      goal(ratio >= GOAL_VS_LOADTXT)])
    if "bc_model" in out:
        r = out["bc_model"]
        rows = []
        for k in r["times_s"]:
            rows.append([k, f"{r['bytes'][k] / MB:.1f}", f"{r['median_s'][k]:.3f}", f"{r['mbps'][k]:.0f}"])
        name = os.path.basename(r["text"])
        parts += [f"**(b)/(c) Whole model `{name}` ({r['components']} components) and its binary copy**", "",
                  md_table(["reader", "MB", "s", "MB/s"], rows), ""]
        keys = list(r["times_s"])
        sv_text = r["mbps"][keys[0]]
        goals.append([f"(b) whole model, text, {r['threads']} threads", f"{sv_text:.0f} MB/s",
                      f">= {GOAL_MODEL_MBPS:.0f} MB/s", goal(sv_text >= GOAL_MODEL_MBPS)])
        frac = r["mbps"][keys[3]] / r["mbps"][keys[4]]
        goals.append(["(c) binary read / raw read", f"{frac:.0%}", f">= {GOAL_BINARY_FRAC:.0%}",
                      goal(frac >= GOAL_BINARY_FRAC)])
    if "d_copy_rss" in out:
        r = out["d_copy_rss"]
        it = r["interpreter"]["rss_mb"]
        rows = []
        for m in r["models"]:
            rows.append([f"{m['hidden']} x {width}", f"{m['bytes'] / MB:.0f}",
                         f"{m['rss_mb']['text->text']:.0f}", f"{m['rss_mb']['text->binary']:.0f}",
                         f"{m['wall_s']['text->text']:.2f}", f"{m['wall_s']['text->binary']:.2f}",
                         f"{it:.0f} + 3 x {m['largest_layer_bytes'] / MB:.1f} = {m['limit_mb']:.0f}",
                         goal(max(m['rss_mb'].values()) <= m['limit_mb'])])
        parts += ["**(d) Peak RSS of `svdistill copy`** (ru_maxrss of a fresh child; "
                  f"`python -c 'import svdistill'` alone: {it:.0f} MB)", "",
                  md_table(["hidden layers", "model MB", "RSS text->text MB", "RSS text->bin MB",
                            "s text->text", "s text->bin", "limit MB (interp + 3x largest layer)", "within"],
                           rows), ""]
        worst = max(max(m["rss_mb"].values()) - m["limit_mb"] for m in r["models"])
        goals.append(["(d) copy peak RSS <= interpreter + 3x largest layer",
                      f"worst {worst:+.0f} MB vs limit", "<= 0", goal(worst <= 0)])
        goals.append([f"(d) flat in layers ({', '.join(str(m['hidden']) for m in r['models'])} hidden)",
                      f"spread {r['spread_mb']:.1f} MB", "<= half a layer", goal(r["flat"])])
    parts += ["**Goals**", "", md_table(["goal", "measured", "target", "met"], goals, "lrrl")]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
