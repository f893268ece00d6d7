#!/usr/bin/env python3
"""Distillation benchmark: frames/s of svdistill.distill's two engines against a
plain hand-written PyTorch distillation loop, side by side in one run.

Teacher 440 -> 6 x 2048 (Sigmoid) -> 8000 (Softmax) (--dims), random weights;
student = svdistill.compress(teacher, rank=256) (--rank). Features: 40-dim raw
frames in a Kaldi ark (utterances of 300-1000 frames, written with kaldiio),
feature transform tests/data/kaldi-nnet1/final.feature_transform
(Splice -5..5 + CMVN, 40 -> 440; an equivalent one is built when the fixture is
missing). Soft targets at T = 2, SGD on gradients summed over the minibatch
(Kaldi's semantics), no momentum, learn rate 0.008 (Kaldi's default) at
minibatch 256 and 0.008 x 256 / minibatch above it (0.0005 at 4096: 0.008 on
gradients summed over 4096 frames diverges, and distill abandons the epoch).

  core    svdistill.distill(..., engine="core")            (C++ trainer, CPU)
  torch   svdistill.distill(..., engine="torch", device=D, precision=P)
  plain   what a user would write instead: nn.Sequential teacher and student
          with the same weights, teacher under torch.no_grad(), loss =
          T^2 * sum over frames of KL(softmax(t/T) || softmax(s/T)),
          torch.optim.SGD(lr=the same) on that summed loss, random minibatches
          drawn from ONE preloaded tensor of already feature-transformed
          frames on the device. It has no data pipeline (no reading, no
          feature transform, no shuffling buffer), no cross-validation, no
          statistics and no schedule: an upper bound for the arithmetic.

The engines are measured through svdistill.distill(..., max_epochs=1,
cv_fraction small): each run reads the ark through the data pipeline (the
torch engine splices on its device), and the epoch-1 row of the report gives
frames/s (training frames / training seconds, CV excluded) and the data-wait
share (the part of those seconds spent waiting for the background reader).
The plain loop is timed over the same number of frames. Each measurement is
repeated --repeats times (round robin, never two at once, each round starting
one configuration later so that no configuration always runs right after the
same other one); medians are reported, with the ratio against the plain
loop on the same device, precision and minibatch, the achieved TFLOP/s (FLOPs
per frame = 2 x teacher weights + 6 x student weights: teacher forward,
student forward + backward) and the share of a peak: on the CPU a practical fp32 peak measured here with
numpy's sgemm (4096^3), on CUDA the spec-sheet dense peak of an NVIDIA H200
(bf16 989, tf32 494, fp32 67 TFLOP/s; "unknown" for other GPUs).

CPU: core, torch and plain at every minibatch (default 256 and 4096), fp32.
CUDA (when torch.cuda.is_available()): torch and plain at fp32 for every
minibatch, and at tf32 and bf16 (torch.autocast for the plain loop) for
minibatches >= 1024.

Goals: CPU torch engine >= 0.9x the plain loop (within 10%) at both minibatch
sizes; CUDA torch engine bf16 at minibatch 4096 >= 1,000,000 frames/s with a
data-wait share < 10%; CUDA torch engine fp32 at minibatch 256 >= 200,000
frames/s.
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
import warnings
from pathlib import Path

import common

ENV_STATE = common.clean_env_reexec()  # before numpy is imported

import numpy as np  # noqa: E402

import svdistill  # noqa: E402
from common import random_mlp, torch_sequential, goal, log, md_table, median  # noqa: E402

T = 2.0
LEARN_RATE = 0.008  # Kaldi's default, per frame (gradients summed over the minibatch) ...
LR_MINIBATCH = 256  # ... at minibatch 256; larger minibatches get 0.008 x 256 / minibatch


FT_FIXTURE = "final.feature_transform"
#: NVIDIA H200 spec sheet, dense (no sparsity), TFLOP/s.
H200_PEAK_TFLOPS = {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}


def learn_rate(mb: int) -> float:
    """0.008 up to minibatch 256, 0.008 x 256 / minibatch above: at 4096, 0.008 on summed
    gradients (16x the step of minibatch 256) makes distill abandon the epoch as diverged."""
    return LEARN_RATE * min(1.0, LR_MINIBATCH / mb)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
def weights(model: svdistill.Model) -> int:
    return sum(c.weight.size for c in model.components if c.weight is not None)


def feature_transform(workdir: Path):
    """(model, where it came from): the fixture, or an equivalent Splice -5..5 + CMVN."""
    cands = []
    if os.environ.get("SVDISTILL_FIXTURES"):
        cands.append(Path(os.environ["SVDISTILL_FIXTURES"]).expanduser() / FT_FIXTURE)
    cands.append(common.REPO / "tests" / "data" / "kaldi-nnet1" / FT_FIXTURE)
    for p in cands:
        if p.is_file():
            return svdistill.read(p), str(p)
    # Splice has no Python constructor: write the same three components as Kaldi text.
    rng = np.random.default_rng(5)
    shift = np.tile(-rng.uniform(-3, 3, 40), 11)
    scale = np.tile(rng.uniform(0.5, 2.0, 40), 11)
    text = ("<Nnet>\n<Splice> 440 40\n[ -5 -4 -3 -2 -1 0 1 2 3 4 5 ]\n<!EndOfComponent>\n"
            "<AddShift> 440 440\n<LearnRateCoef> 0 [ " + " ".join(f"{v:.6g}" for v in shift) + " ]\n"
            "<!EndOfComponent>\n<Rescale> 440 440\n<LearnRateCoef> 0 [ "
            + " ".join(f"{v:.6g}" for v in scale) + " ]\n<!EndOfComponent>\n</Nnet>\n")
    p = workdir / "distill-bench.feature_transform"
    p.write_text(text)
    return svdistill.read(p), f"built (fixture not found; Splice -5..5 + AddShift/Rescale, {p})"


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def make_ark(path: Path, train_frames: int, cv_frames: int, cv_fraction: float, ft, seed: int) -> dict:
    """A Kaldi ark of 40-dim raw frames: utterances of 300-1000 frames, ``train_frames``
    in utterances whose keys the hash split puts on the training side and at least
    ``cv_frames`` (>= 1 utterance) on the CV side, interleaved in file order.

    The frames are N(0, 1) pushed through the inverse of the transform's CMVN, so the
    transformed features are about N(0, 1). Vectorised: one draw for all frames.
    """
    import kaldiio
    from svdistill.distill.data import cv_by_hash
    rng = np.random.default_rng(seed)

    def lengths(total: int) -> list:
        out, n = [], 0
        while n < total:
            k = int(rng.integers(300, 1001))
            out.append(k)
            n += k
        excess = n - total  # hit the total exactly: shorten utterances, none below 300
        for j in range(len(out)):
            cut = min(excess, out[j] - 300)
            out[j] -= cut
            excess -= cut
        return out

    train_len, cv_len = lengths(train_frames), lengths(max(cv_frames, 1))
    keys_train, keys_cv, i = [], [], 0
    while len(keys_train) < len(train_len) or len(keys_cv) < len(cv_len):
        key = f"spk{i // 100:04d}-utt{i:07d}"
        side = keys_cv if cv_by_hash(key, cv_fraction) else keys_train
        if len(side) < len(cv_len if side is keys_cv else train_len):
            side.append(key)
        i += 1
    order = sorted([(k, n, False) for k, n in zip(keys_train, train_len)] +
                   [(k, n, True) for k, n in zip(keys_cv, cv_len)])
    total = sum(n for _, n, _ in order)
    shift, scale = np.zeros(40, np.float32), np.ones(40, np.float32)
    for c in ft.components:  # undo the (first 40 dims of the) CMVN
        if c.kind == "AddShift":
            shift = c.params["shift_data"][:40]
        elif c.kind == "Rescale":
            scale = c.params["scale_data"][:40]
    x = rng.standard_normal((total, 40), dtype=np.float32)
    x /= scale
    x -= shift
    t = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with kaldiio.WriteHelper(f"ark:{tmp}") as w:
        lo = 0
        for key, n, _ in order:
            w(key, x[lo:lo + n])
            lo += n
    os.replace(tmp, path)
    return {"path": str(path), "utterances": len(order), "train_utterances": len(train_len),
            "cv_utterances": len(cv_len), "train_frames": sum(train_len), "cv_frames": sum(cv_len),
            "bytes": path.stat().st_size, "write_s": time.perf_counter() - t,
            "train_keys": set(keys_train)}


def load_transformed(ark: dict, ft, device: str):
    """The training utterances of ``ark``, feature-transformed, as ONE tensor on ``device``."""
    import kaldiio
    import torch
    from svdistill.torch import to_module
    mod = to_module(ft).to(device).eval()
    parts = []
    with torch.no_grad():
        for key, mat in kaldiio.load_ark(ark["path"]):
            if key in ark["train_keys"]:
                parts.append(mod(torch.from_numpy(np.array(mat, dtype=np.float32)).to(device)))
    return torch.cat(parts)


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------
def set_tf32(torch, on: bool) -> None:
    """The engine sets these process-wide for tf32 and leaves them: reset before every run."""
    if not torch.cuda.is_available():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def run_engine(engine, device, precision, mb, ark, teacher, student, ft, cv_fraction) -> dict:
    import torch
    set_tf32(torch, precision == "tf32")
    t = time.perf_counter()
    _, rep = svdistill.distill(student, f"ark:{ark['path']}", teacher=teacher, feature_transform=ft,
                               engine=engine, device=device if engine == "torch" else None,
                               precision=precision, minibatch_size=mb, max_epochs=1, cv_fraction=cv_fraction,
                               learn_rate=learn_rate(mb), temperature=T, progress=False)
    wall = time.perf_counter() - t
    set_tf32(torch, False)
    e = rep.epochs[1]
    if e.diverged or not e.train_frames:
        raise RuntimeError(f"{engine} {device} {precision} mb {mb}: epoch 1 diverged or trained no frames")
    return {"fps": e.frames_per_second, "wait_share": e.wait_share, "train_frames": e.train_frames,
            "seconds": e.seconds, "data_wait_s": e.data_wait, "wall_s": wall,
            "train_objective": e.train_objective, "cv_objective": e.cv_objective,
            "report": {"engine": rep.engine, "device": rep.device, "precision": rep.precision}}


def run_plain(device, precision, mb, frames, x_all, teacher, student, seed) -> dict:
    import torch
    import torch.nn.functional as F
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    set_tf32(torch, precision == "tf32")
    tnet = torch_sequential(teacher).to(dev).eval().requires_grad_(False)
    snet = torch_sequential(student).to(dev)
    opt = torch.optim.SGD(snet.parameters(), lr=learn_rate(mb))
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    n = x_all.shape[0]
    steps = frames // mb
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext())
    if cuda:
        torch.cuda.synchronize(dev)
    t = time.perf_counter()
    for _ in range(steps):
        x = x_all.index_select(0, torch.randint(0, n, (mb,), device=dev, generator=gen))
        with amp:
            with torch.no_grad():
                tz = tnet(x)
            sz = snet(x)
        q = torch.softmax(tz.float() / T, dim=1)
        log_p = torch.log_softmax(sz.float() / T, dim=1)
        loss = (T * T) * F.kl_div(log_p, q, reduction="sum")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize(dev)
    secs = time.perf_counter() - t
    last = float(loss.detach()) / mb
    set_tf32(torch, False)
    return {"fps": steps * mb / secs, "wait_share": None, "train_frames": steps * mb, "seconds": secs,
            "train_objective_last": last}


def cpu_gemm_peak(n: int, repeats: int) -> dict:
    """Practical fp32 peak of this CPU: numpy's sgemm on n x n x n (median of ``repeats``)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    times = common.round_robin({"sgemm": lambda: np.matmul(a, b, out=out)}, repeats, gap=0.25)["sgemm"]
    return {"n": n, "times": times, "tflops": 2.0 * n ** 3 / median(times) / 1e12,
            "best_tflops": 2.0 * n ** 3 / min(times) / 1e12}


def gpu_info(torch) -> dict:
    p = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    return {"name": name, "capability": list(torch.cuda.get_device_capability(0)),
            "memory_gib": p.total_memory / 2 ** 30, "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "peak_tflops": dict(H200_PEAK_TFLOPS) if "H200" in name else None,
            "peak_source": "NVIDIA H200 spec sheet (dense)" if "H200" in name else "unknown"}


def blas_note(torch) -> str:
    cfg = torch.__config__.show()
    blas = next((p.split("=", 1)[1] for p in cfg.replace(",", " ").split() if p.startswith("BLAS_INFO=")), "?")
    cap = next((line.split(":", 1)[1].strip() for line in cfg.splitlines() if "CPU capability" in line), "?")
    return f"BLAS {blas}, CPU capability {cap}, {torch.get_num_threads()} threads"


def numpy_blas_note() -> str:
    try:
        b = np.__config__.CONFIG["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version')}"
    except (AttributeError, KeyError, TypeError):
        return "?"


# --------------------------------------------------------------------------
def main() -> int:
    ap = common.base_parser(__doc__, default_repeats=3)
    ap.add_argument("--dims", default=None, help="teacher dims (default 440,2048x6,8000; input must be 440)")
    ap.add_argument("--rank", type=int, default=256, help="rank of the SVD student (default 256)")
    ap.add_argument("--minibatches", default=None, help="minibatch sizes (default 256,4096)")
    ap.add_argument("--engines", default="core,torch,plain", help="which of core,torch,plain (default all)")
    ap.add_argument("--devices", default=None,
                    help="cpu and/or cuda, in this order (default: cuda, when torch.cuda.is_available(), "
                         "then cpu)")
    ap.add_argument("--frames", type=int, default=None,
                    help="training frames per CPU run (default 20480: ~12-25 s per run on 2 cores)")
    ap.add_argument("--gpu-frames", type=int, default=None, help="training frames per CUDA run (default 2,500,000)")
    ap.add_argument("--cv-fraction", type=float, default=0.01,
                    help="CV share of the frames (at least one utterance; default 0.01)")
    ap.add_argument("--gap", type=float, default=0.25, help="idle seconds before each timed run")
    ap.add_argument("--gemm-size", type=int, default=None, help="n of the CPU peak sgemm (default 4096)")
    a = common.finish_args(ap.parse_args())
    if a.dims:
        dims = []
        for part in a.dims.split(","):  # "440,2048x6,8000"
            width, _, times = part.partition("x")
            dims += [int(width)] * (int(times) if times else 1)
    else:
        dims = [440, 512, 512, 1000] if a.quick else [440] + [2048] * 6 + [8000]
    rank = min(a.rank, 64) if a.quick else a.rank
    mbs = [int(x) for x in (a.minibatches or ("64,512" if a.quick else "256,4096")).split(",")]
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    if set(engines) - {"core", "torch", "plain"}:
        raise SystemExit(f"--engines: expected core, torch and/or plain, got {a.engines}")
    cpu_frames = a.frames or (2048 if a.quick else 20480)
    gpu_frames = a.gpu_frames or (65536 if a.quick else 2_500_000)

    import torch
    have_cuda = torch.cuda.is_available()
    devices = [d.strip() for d in (a.devices or ("cuda,cpu" if have_cuda else "cpu")).split(",") if d.strip()]
    if "cuda" in devices and not have_cuda:
        raise SystemExit("--devices cuda: torch.cuda.is_available() is False")
    gpu = gpu_info(torch) if have_cuda else None

    load0 = os.getloadavg()
    log(f"load average at the start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    log(f"building the teacher {'-'.join(map(str, dims))} and its rank-{rank} student ...")
    teacher = random_mlp(dims)
    student, _ = svdistill.compress(teacher, rank=rank)
    ft, ft_source = feature_transform(a.workdir)
    if ft.output_dim != dims[0] or ft.input_dim != 40:
        raise SystemExit(f"the feature transform maps {ft.input_dim} -> {ft.output_dim}; the teacher expects "
                         f"{dims[0]} and the features have 40 dims")
    wt, ws = weights(teacher), weights(student)
    flop_frame = 2.0 * wt + 6.0 * ws

    extra = {"extra_torch": f"{torch.__version__}, {blas_note(torch)}",
             "extra_numpy BLAS": numpy_blas_note(),
             "extra_feature transform": ft_source}
    if gpu:
        extra["extra_GPU"] = (f"{gpu['name']} (sm {gpu['capability'][0]}.{gpu['capability'][1]}, "
                              f"{gpu['memory_gib']:.0f} GiB), CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}")
    env = common.environment(ENV_STATE, extra)

    log("measuring the CPU's practical fp32 peak (numpy sgemm) ...")
    gemm_n = a.gemm_size or (1024 if a.quick else 4096)
    peak_cpu = cpu_gemm_peak(gemm_n, max(3, a.repeats))

    results, data_info = [], {}

    def find(device, engine, prec, mb):
        return next((r for r in results if (r["device"], r["engine"], r["precision"], r["minibatch"]) ==
                     (device, engine, prec, mb)), None)

    def payload(**more):
        for r in results:
            pl = find(r["device"], "plain", r["precision"], r["minibatch"])
            r["vs_plain"] = r["fps"] / pl["fps"] if pl and pl["fps"] and r["fps"] else None
        return {"environment": env, "gpu": gpu, "dims": dims, "rank": rank, "teacher_weights": wt,
                "student_weights": ws, "flop_per_frame": flop_frame, "temperature": T,
                "learn_rates": {m: learn_rate(m) for m in mbs},
                "minibatches": mbs, "engines": engines, "devices": devices, "repeats": a.repeats,
                "feature_transform": ft_source, "cpu_peak": peak_cpu, "data": data_info, "results": results,
                "loadavg_start": load0, "quick": a.quick, **more}

    for device in devices:
        cuda = device == "cuda"
        frames = gpu_frames if cuda else cpu_frames
        cv_frames = max(1, round(a.cv_fraction * frames))
        t = time.perf_counter()
        ark = make_ark(a.workdir / f"distill-bench-{device}-{frames}.ark", frames, cv_frames, a.cv_fraction, ft, 11)
        gen_s = time.perf_counter() - t
        warm_frames = max(4 * max(mbs), 8192) if cuda else max(4 * min(mbs), 1024)
        warm = make_ark(a.workdir / f"distill-bench-{device}-warm.ark", warm_frames, 1, a.cv_fraction, ft, 12)
        log(f"{device}: {ark['utterances']} utterances, {ark['train_frames']:,} training + {ark['cv_frames']:,} CV "
            f"frames, {ark['bytes'] / common.MB:.0f} MB ark, generated in {gen_s:.1f} s")
        x_all = load_transformed(ark, ft, device) if "plain" in engines else None
        x_warm = load_transformed(warm, ft, device) if "plain" in engines else None
        data_info[device] = {k: v for k, v in ark.items() if k != "train_keys"}
        data_info[device]["generate_s"] = gen_s
        for mb in mbs:
            precs = ["fp32"] + (["tf32", "bf16"] if cuda and mb >= 1024 else [])
            configs = [(e, p) for p in precs for e in engines if not (e == "core" and (cuda or p != "fp32"))]
            n_train = ark["train_frames"] // mb * mb
            if n_train == 0:
                raise SystemExit(f"minibatch {mb} is larger than the {ark['train_frames']} training frames")

            def once(engine, prec, data, x, fr, seed):
                if engine == "plain":
                    return run_plain(device, prec, mb, fr, x, teacher, student, seed)
                return run_engine(engine, device, prec, mb, data, teacher, student, ft, a.cv_fraction)

            # Untimed warm-up (allocators, cuBLAS handles, kernel choice): every CUDA
            # configuration; on the CPU each engine once, at the smallest minibatch.
            # A configuration that fails (an error, a diverged epoch) is reported, not fatal.
            failed = {}

            def attempt(e, p, *args):
                try:
                    return once(e, p, *args)
                except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
                    failed[(e, p)] = f"{type(exc).__name__}: {exc}"
                    log(f"  {device} mb {mb} {e} {p}: FAILED: {failed[(e, p)]}")
                    if cuda:
                        torch.cuda.empty_cache()
                    return None

            if cuda or mb == min(mbs):
                for e, p in configs:
                    attempt(e, p, warm, x_warm, warm["train_frames"] // mb * mb, 99)
            runs = {c: [] for c in configs}
            for r in range(a.repeats):
                # Round r starts at configuration r: over the rounds each one follows each
                # other one (a run right after the core engine tends to come out slower).
                k = r % len(configs)
                for e, p in configs[k:] + configs[:k]:
                    if (e, p) in failed:
                        continue
                    gc.collect()
                    time.sleep(a.gap)
                    res = attempt(e, p, ark, x_all, n_train, 1000 + r)
                    if res is None:
                        continue
                    runs[(e, p)].append(res)
                    log(f"  {device} mb {mb} {e} {p} round {r + 1}/{a.repeats}: {res['fps']:,.0f} frames/s"
                        + ("" if res["wait_share"] is None else f", wait {res['wait_share']:.1%}")
                        + f", {res['seconds']:.1f} s")
            for (e, p), rs in runs.items():
                peak = (peak_cpu["tflops"] if not cuda else
                        (gpu["peak_tflops"][p] if gpu and gpu["peak_tflops"] else None))
                row = {"device": device, "engine": e, "precision": p, "minibatch": mb, "peak_tflops": peak,
                       "runs": rs, "error": failed.get((e, p))}
                if (e, p) in failed:  # no median from a configuration that failed once
                    row.update(fps=None, tflops=None, of_peak=None, wait_share=None, train_frames=n_train)
                else:
                    fps = median(x["fps"] for x in rs)
                    ws_ = [x["wait_share"] for x in rs if x["wait_share"] is not None]
                    tflops = fps * flop_frame / 1e12
                    row.update(fps=fps, tflops=tflops, of_peak=tflops / peak if peak else None,
                               wait_share=median(ws_) if ws_ else None, train_frames=rs[0]["train_frames"])
                results.append(row)
            common.write_json(a.json, payload(partial=True))  # a killed run keeps what it measured
        del x_all, x_warm
        if cuda:
            torch.cuda.empty_cache()

    load1 = os.getloadavg()

    payload()  # the ratios

    def pct(x):
        return "-" if x is None else f"{x:.0%}"

    def pct1(x):
        return "-" if x is None else f"{x:.1%}"

    def peak_cell(r):
        if r["of_peak"] is None:
            return "unknown"
        return f"{r['of_peak']:.1%}" if r["device"] == "cuda" else f"{r['of_peak']:.0%}"

    def fail(r):
        return "FAILED: " + (r["error"] or "?")[:60]

    rows = [[r["device"], r["engine"], r["precision"], r["minibatch"],
             fail(r) if r["fps"] is None else f"{r['fps']:,.0f}",
             "-" if r["vs_plain"] is None else f"{r['vs_plain']:.2f}x",
             "-" if r["tflops"] is None else f"{r['tflops']:.3f}", "-" if r["fps"] is None else peak_cell(r),
             "n/a" if r["engine"] == "plain" else pct1(r["wait_share"]), f"{r['train_frames']:,}"]
            for r in results]

    goals = []
    for mb in mbs:
        tr, pl = find("cpu", "torch", "fp32", mb), find("cpu", "plain", "fp32", mb)
        what = f"CPU mb {mb}: torch engine >= 0.9x plain loop"
        if tr and pl and tr["vs_plain"] is not None:
            goals.append([what, f"{tr['vs_plain']:.2f}x", goal(tr["vs_plain"] >= 0.9)])
        else:
            goals.append([what, fail(tr or pl) if (tr or pl) else "not measured", "n/a" if not (tr or pl)
                          else goal(False)])

    def cuda_goal(what, r, ok, text):
        if r is None:
            return [what, "not measured (no CUDA run)", "n/a"]
        if r["fps"] is None:
            return [what, fail(r), goal(False)]
        return [what, text(r), goal(ok(r))]

    goals.append(cuda_goal("CUDA bf16 mb 4096: torch engine >= 1,000,000 frames/s, wait < 10%",
                           find("cuda", "torch", "bf16", 4096),
                           lambda r: r["fps"] >= 1e6 and (r["wait_share"] or 0.0) < 0.10,
                           lambda r: f"{r['fps']:,.0f} frames/s, wait {pct1(r['wait_share'])}"))
    goals.append(cuda_goal("CUDA fp32 mb 256: torch engine >= 200,000 frames/s", find("cuda", "torch", "fp32", 256),
                           lambda r: r["fps"] >= 2e5, lambda r: f"{r['fps']:,.0f} frames/s"))

    cpu_note = (f"CPU peak: {peak_cpu['tflops']:.3f} TFLOP/s fp32, measured here with numpy's sgemm "
                f"({gemm_n}^3, median of {len(peak_cpu['times'])}; best {peak_cpu['best_tflops']:.3f}) "
                "- a practical peak, not a spec-sheet one")
    gpu_note = ("no CUDA device: the GPU rows and goals were not measured" if not gpu else
                f"GPU peak: {gpu['name']}: " + (
                    "NVIDIA H200 spec sheet, dense: bf16 989, tf32 494, fp32 67 TFLOP/s" if gpu["peak_tflops"]
                    else "unknown (spec-sheet peaks are known only for the NVIDIA H200)"))
    lines = [f"## Distillation: frames/s (median of {a.repeats})", "",
             f"teacher {'-'.join(map(str, dims))} ({wt:,} weights), student rank {rank} ({ws:,} weights); "
             f"FLOPs per frame = 2 x {wt:,} + 6 x {ws:,} = {flop_frame / 1e6:,.1f} MFLOP; T = {T:g}; SGD on "
             f"gradients summed over the minibatch, learn rate " + ", ".join(f"{learn_rate(m):g} at {m}" for m in mbs)
             + f" (0.008 x {LR_MINIBATCH} / minibatch above {LR_MINIBATCH}: 0.008 diverges at 4096); "
             "one epoch per run", "",
             md_table(["device", "engine", "precision", "minibatch", "frames/s", "vs plain", "TFLOP/s",
                       "of peak", "data wait", "frames"], rows, align="llllrrrrrr"), "",
             ("- core / torch: `svdistill.distill(..., max_epochs=1)`, epoch-1 row: reads the ark, "
              "feature transform, shuffling buffer, statistics; CV passes excluded from the time."),
             ("- plain: a hand-written PyTorch loop over one preloaded tensor of already feature-transformed "
              "frames on the device: no data pipeline, no CV, no statistics, no schedule."),
             f"- {cpu_note}", f"- {gpu_note}",
             (f"- load average (1 min) at the start {load0[0]:.2f}, at the end {load1[0]:.2f} "
              f"({os.cpu_count()} CPUs; this process's own work counts in the second)"),
             "- data: " + "; ".join(f"{d}: {v['train_frames']:,} training frames in {v['train_utterances']} "
                                    f"utterances + {v['cv_frames']:,} CV frames, {v['bytes'] / common.MB:.1f} MB ark"
                                    for d, v in data_info.items()), "",
             md_table(["goal", "measured", "met"], goals), "", "command: " + common.command_line(), "",
             common.format_environment(env)]
    print("\n".join(lines))
    common.write_json(a.json, payload(partial=False, loadavg_end=load1, table="\n".join(lines),
                                      goals=[{"goal": g[0], "measured": g[1], "met": g[2]} for g in goals]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
