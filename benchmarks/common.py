"""Helpers shared by the svdistill benchmark scripts.

Nothing here imports numpy at module level: every script calls
:func:`clean_env_reexec` first, which may re-execute the interpreter with
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` removed from the environment, and
that has to happen before any OpenBLAS is loaded.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MARK = "SVDISTILL_BENCH_REEXEC"  # set on the re-executed process: what was removed

DEFAULT_WORKDIR = "/tmp/svdistill-bench"
MB = 1e6  # all sizes and rates use decimal megabytes (10^6 bytes)


# --------------------------------------------------------------------------
# Environment: OpenBLAS variables, versions, CPU
# --------------------------------------------------------------------------
def clean_env_reexec() -> Dict[str, Any]:
    """Re-execute this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE.

    The machines these benchmarks target set both variables, which push every
    OpenBLAS (numpy's and svdistill's) onto a slower kernel. Unless
    ``--keep-env`` is on the command line, the script re-executes itself with
    the two removed (before numpy is imported), and its children inherit the
    cleaned environment. Returns what happened, for the report.
    """
    if _MARK in os.environ:  # we are the re-executed process
        removed = json.loads(os.environ.pop(_MARK))
        return {"action": "removed", "removed": removed, "keep_env": False}
    present = {k: os.environ[k] for k in BLAS_ENV_VARS if k in os.environ}
    if "--keep-env" in sys.argv:
        return {"action": "kept" if present else "not set", "kept": present, "keep_env": True}
    if not present:
        return {"action": "not set", "removed": {}, "keep_env": False}
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
    env[_MARK] = json.dumps(present)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
    raise AssertionError("unreachable")


def env_note(env_state: Dict[str, Any]) -> str:
    a = env_state["action"]
    if a == "removed":
        vals = ", ".join(f"{k}={v}" for k, v in env_state["removed"].items())
        return f"removed from the environment by re-exec (were: {vals})"
    if a == "kept":
        vals = ", ".join(f"{k}={v}" for k, v in env_state["kept"].items())
        return f"KEPT (--keep-env): {vals}"
    return "not set" + (" (--keep-env)" if env_state.get("keep_env") else "")


def _cpu_info() -> Dict[str, Any]:
    model, flags, family, cpu_model = "unknown", set(), None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name" and model == "unknown":
                    model = val
                elif key == "flags" and not flags:
                    flags = set(val.split())
                elif key == "cpu family" and family is None:
                    family = val
                elif key == "model" and cpu_model is None:
                    cpu_model = val
    except OSError:
        pass
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq",
                        "avx512_vnni", "avx512_bf16") if f in flags]
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"model_name": model, "family": family, "model": cpu_model, "simd": simd,
            "logical_cpus": os.cpu_count(), "usable_cpus": affinity}


def _dist_version(name: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_rev() -> Optional[str]:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "cpp",
                                "CMakeLists.txt", "pyproject.toml"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(env_state: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """CPU, versions, BLAS kernels and thread counts (call after the imports)."""
    import numpy as np
    import svdistill
    from svdistill import linalg
    try:
        from threadpoolctl import threadpool_info
        pools = [{k: d.get(k) for k in ("internal_api", "prefix", "version", "architecture",
                                        "threading_layer", "num_threads", "filepath")}
                 for d in threadpool_info()]
    except ImportError:
        pools = None
    info = {
        "command": command_line(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_info(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _dist_version("torch"),
        "scipy": _dist_version("scipy"),
        "scikit-learn": _dist_version("scikit-learn"),
        "pandas": _dist_version("pandas"),
        "svdistill": svdistill.__version__,
        "svdistill_git": _git_rev(),
        "svdistill_blas_core": linalg.blas_core(),
        "svdistill_threads": linalg.get_num_threads(),
        "threadpools": pools,
        "openblas_env": env_state,
        "thread_env": {k: os.environ.get(k) for k in ("SVDISTILL_NUM_THREADS", "OMP_NUM_THREADS",
                                                      "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if os.environ.get(k) is not None},
    }
    if extra:
        info.update(extra)
    return info


def format_environment(env: Dict[str, Any]) -> str:
    cpu = env["cpu"]
    lines = [
        f"- command: `{env['command']}`",
        f"- date: {env['date']}; svdistill {env['svdistill']} (git {env['svdistill_git']})",
        f"- CPU: {cpu['model_name']} (family {cpu['family']} model {cpu['model']}), "
        f"{cpu['usable_cpus']} usable of {cpu['logical_cpus']} logical CPUs; "
        f"SIMD: {' '.join(cpu['simd']) or '?'}",
        f"- Python {env['python']}, numpy {env['numpy']}, scipy {env['scipy']}, "
        f"scikit-learn {env['scikit-learn']}, pandas {env['pandas']}, torch {env['torch']}",
        f"- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: {env_note(env['openblas_env'])}",
        f"- svdistill core: OpenBLAS kernel {env['svdistill_blas_core']}, "
        f"{env['svdistill_threads']} threads",
    ]
    if env.get("threadpools"):
        for p in env["threadpools"]:
            lib = os.path.basename(p.get("filepath") or "?")
            lines.append(f"- threadpool {p['internal_api']} {p['version']} ({lib}): "
                         f"kernel {p['architecture']}, {p['num_threads']} threads")
    for k, v in env.items():
        if k.startswith("extra_"):
            lines.append(f"- {k[6:]}: {v}")
    if env.get("thread_env"):
        lines.append("- thread variables: " + ", ".join(f"{k}={v}" for k, v in env["thread_env"].items()))
    return "\n".join(lines)


def command_line() -> str:
    return "python " + shlex.join(sys.argv)


# --------------------------------------------------------------------------
# Shared scripts (../shared/bench) and cached models
# --------------------------------------------------------------------------
def shared_bench_dir() -> Path:
    """``../shared/bench`` relative to the repository, or $SVDISTILL_SHARED
    (either the shared directory or its ``bench`` subdirectory)."""
    env = os.environ.get("SVDISTILL_SHARED")
    if env:
        p = Path(env)
        d = p if (p / "gen_nnet.py").exists() else p / "bench"
    else:
        d = Path(__file__).resolve().parents[2] / "shared" / "bench"
    if not (d / "gen_nnet.py").exists():
        raise SystemExit(f"cannot find gen_nnet.py in {d} (set SVDISTILL_SHARED to the shared directory)")
    return d


def gen_nnet_module():
    """Import ``gen_nnet.py`` from the shared directory (for random_lowrank_matrix & co.)."""
    path = shared_bench_dir() / "gen_nnet.py"
    spec = importlib.util.spec_from_file_location("gen_nnet", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def ensure_model(workdir: Path, *, size: Optional[str] = None, dims: Optional[Sequence[int]] = None,
                 style: str = "kaldi", seed: int = 0) -> Path:
    """A generated model in the cache dir, made by gen_nnet.py the first time."""
    if (size is None) == (dims is None):
        raise ValueError("give exactly one of size and dims")
    name = (f"{size}.{style}" if size else f"dims-{'-'.join(map(str, dims))}.{style}") + \
        (f".seed{seed}" if seed else "") + ".txt"
    out = workdir / name
    if out.exists():
        return out
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(shared_bench_dir() / "gen_nnet.py"),
           "--size" if size else "--dims", size or ",".join(map(str, dims)),
           "--style", style, "--seed", str(seed), "--out", str(out)]
    log(f"generating {out.name} (once; cached in {workdir}) ...")
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log(f"  done in {time.perf_counter() - t:.1f} s, {out.stat().st_size / MB:.1f} MB")
    return out


def model_dims(size: Optional[str], dims: Optional[Sequence[int]]) -> List[int]:
    if dims:
        return list(dims)
    return list(gen_nnet_module().SIZES[size])


def svdistill_cmd() -> List[str]:
    """The ``svdistill`` console script of this interpreter's environment."""
    exe = Path(sys.executable).parent / "svdistill"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "svdistill"]


def warm(path: Path, chunk: int = 16 << 20, buf: Optional[Any] = None) -> int:
    """Read a file once (into ``buf`` if given, reused) so it is in the page cache;
    returns its size. Also the benchmarks' "raw read" reference (``buf``: any
    writable buffer, e.g. a page-aligned ``mmap.mmap(-1, chunk)``)."""
    n = 0
    buf = bytearray(chunk) if buf is None else buf
    with open(path, "rb", buffering=0) as f:
        while True:
            r = f.readinto(buf)
            if not r:
                return n
            n += r


# --------------------------------------------------------------------------
# Timing and child processes
# --------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def round_robin(fns: Dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                label: str = "", gap: float = 0.0) -> Dict[str, List[float]]:
    """Time each function ``repeats`` times, one after the other in turn
    (never two at once), after ``warmup`` untimed rounds. Returns seconds.

    ``gap``: idle seconds before each call, so that the worker threads of the
    previous library (OpenBLAS and OpenMP pools spin for a while after a call)
    have gone to sleep and do not steal cores from the next one."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            if gap:
                time.sleep(gap)
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            if r >= warmup:
                times[name].append(dt)
        if label:
            log(f"  {label}: round {r + 1}/{warmup + repeats}"
                + ("" if r >= warmup else " (warm-up)"))
    return times


# A tiny launcher runs the measured command and reports getrusage(RUSAGE_CHILDREN)
# of its own (only) child. Measuring from a fresh, small process matters: on Linux a
# child that was forked (or vforked) from a big benchmark process starts with that
# process's peak RSS in its ru_maxrss, and RUSAGE_CHILDREN of a long-lived parent is
# the maximum over all children ever waited for.
_LAUNCHER = r"""
import json, resource, subprocess, sys, time
spec = json.loads(sys.argv[1])
with open(spec["stdout"], "wb") as o, open(spec["stderr"], "wb") as e:
    t = time.perf_counter()
    rc = subprocess.call(spec["cmd"], stdout=o, stderr=e, cwd=spec.get("cwd"))
    wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": wall, "maxrss_kb": ru.ru_maxrss,
                  "utime_s": ru.ru_utime, "stime_s": ru.ru_stime}))
"""


def run_measured(cmd: Sequence[str], logdir: Path, tag: str, cwd: Optional[Path] = None,
                 check: bool = True) -> Dict[str, Any]:
    """Run ``cmd`` as a child of a fresh launcher; wall time and the child's peak RSS.

    Returns ``wall_s``, ``rss_mb`` (ru_maxrss, decimal MB), ``cpu_s`` (user+sys)
    and ``rc``; stdout/stderr go to ``logdir/tag.out|err``.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    spec = {"cmd": list(map(str, cmd)), "stdout": str(logdir / f"{tag}.out"),
            "stderr": str(logdir / f"{tag}.err"), "cwd": str(cwd) if cwd else None}
    p = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"launcher failed: {p.stderr}")
    r = json.loads(p.stdout)
    res = {"rc": r["rc"], "wall_s": r["wall_s"], "rss_mb": r["maxrss_kb"] * 1024 / MB,
           "cpu_s": r["utime_s"] + r["stime_s"]}
    if check and r["rc"] != 0:
        err = Path(spec["stderr"]).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"command failed (exit {r['rc']}): {shlex.join(spec['cmd'])}\n{err}")
    return res


def interpreter_rss(logdir: Path, repeats: int) -> Dict[str, Any]:
    """Peak RSS and wall time of ``python -c 'import svdistill'`` (medians of
    ``repeats``), and the RSS of ``true`` run the same way: the measurement floor
    (a vforked child starts with the launcher's own peak, about 11 MB)."""
    runs = [run_measured([sys.executable, "-c", "import svdistill"], logdir, "interp")
            for _ in range(max(1, repeats))]
    floor = run_measured(["true"], logdir, "true")["rss_mb"]
    return {"rss_mb": median(r["rss_mb"] for r in runs), "wall_s": median(r["wall_s"] for r in runs),
            "runs": runs, "floor_true_mb": floor}


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def base_parser(description: str, default_repeats: int = 5) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small sizes and 2 repeats: checks the script end to end in well under a minute")
    ap.add_argument("--repeats", type=int, default=None,
                    help=f"timed repeats per measurement; medians are reported (default {default_repeats}, "
                         "--quick: 2)")
    ap.add_argument("--workdir", type=Path, default=Path(DEFAULT_WORKDIR),
                    help=f"cache for generated models and scratch files (default {DEFAULT_WORKDIR})")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE", help="write all raw numbers here")
    ap.add_argument("--keep-env", action="store_true",
                    help="do not remove OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment")
    ap.set_defaults(_default_repeats=default_repeats)
    return ap


def finish_args(a: argparse.Namespace) -> argparse.Namespace:
    if a.repeats is None:
        a.repeats = 2 if a.quick else a._default_repeats
    if a.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    a.workdir = a.workdir.resolve()
    a.workdir.mkdir(parents=True, exist_ok=True)
    return a


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    """A markdown table; ``align`` is one char per column: l or r (default: l then r)."""
    align = align or ("l" + "r" * (len(headers) - 1))
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(r, widths, align)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                         for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def goal(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def write_json(path: Optional[Path], obj: Any) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)
    log(f"raw numbers written to {path}")


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# --------------------------------------------------------------------------
# Networks shared by the training benchmarks (numpy, svdistill and torch are
# imported when called: this module loads before them)
# --------------------------------------------------------------------------
def random_mlp(dims, seed=0):
    """An svdistill.Model of random affine layers (scaled 1/sqrt(in)), Sigmoid hidden, Softmax out."""
    import numpy as np
    import svdistill
    rng = np.random.default_rng(seed)
    comps = []
    for i in range(len(dims) - 1):
        w = (rng.standard_normal((dims[i + 1], dims[i])) / np.sqrt(dims[i])).astype(np.float32)
        b = (rng.standard_normal(dims[i + 1]) * 0.1).astype(np.float32)
        comps.append(svdistill.Component.affine(w, b))
        comps.append(svdistill.Component.activation("Sigmoid" if i < len(dims) - 2 else "Softmax", dims[i + 1]))
    return svdistill.Model(comps)


def torch_sequential(model):
    """The model without its final softmax (logits) as torch.nn.Sequential, same weights:
    what a user writes by hand (Linear and Sigmoid only)."""
    import torch
    layers = []
    for c in model.components[:-1]:
        if c.kind in ("AffineTransform", "LinearTransform"):
            lin = torch.nn.Linear(c.input_dim, c.output_dim, bias=c.kind == "AffineTransform")
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(c.weight))
                if c.bias is not None:
                    lin.bias.copy_(torch.from_numpy(c.bias))
            layers.append(lin)
        elif c.kind == "Sigmoid":
            layers.append(torch.nn.Sigmoid())
        else:
            raise ValueError(f"torch_sequential has no {c.kind}")
    return torch.nn.Sequential(*layers)
