#!/usr/bin/env python3
"""End-to-end benchmark: `svdistill compress` against the legacy pipeline.

For each model (gen_nnet.py `--size legacy --style pdnn`, `--size large --style
pdnn` and `--size large --style kaldi`), text in and text out:

  svdistill   svdistill compress --rank-fraction 0.25 IN OUT
  legacy      python ../shared/bench/legacy_pipeline.py IN --rank-frac 0.25 --workdir DIR --json FILE

each run as a child of a fresh launcher process: wall time and peak RSS
(ru_maxrss of the child; for the legacy pipeline the largest of its processes).
The legacy pipeline reads only the PDNN layout, so a Kaldi-layout model is
compared with the legacy run on its PDNN twin (same seed: the same weights).

Reported: medians over --repeats (svdistill and legacy alternate, never
concurrently), the ratio legacy / svdistill (goal >= 20x), peak RSS against the
memory goal line (RSS of `python -c 'import svdistill'` + 3x the largest
layer's float32 bytes), the legacy pipeline's own stage times, a check of both
outputs with `svdistill info`, and the relative Frobenius error
||W - W2 W1||_F / ||W||_F of every layer for both outputs (same ranks, so the
errors should agree).

    python benchmarks/bench_pipeline.py              # full sizes (about 10 minutes, legacy dominates)
    python benchmarks/bench_pipeline.py --quick      # only the legacy-size model (PDNN and Kaldi layouts)
"""
from __future__ import annotations

import common

ENV_STATE = common.clean_env_reexec()  # before numpy is imported

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

import numpy as np  # noqa: E402

import svdistill  # noqa: E402

from common import MB, log, median, md_table, goal  # noqa: E402

GOAL_SPEEDUP = 20.0
WEIGHT_KINDS = ("AffineTransform", "LinearTransform")


def models_for(a) -> List[Dict[str, Any]]:
    """name, spec of the model, and the PDNN model the legacy pipeline runs on."""
    if a.quick:
        specs = [("legacy.pdnn", {"size": "legacy", "style": "pdnn"}, None),
                 ("legacy.kaldi", {"size": "legacy", "style": "kaldi"}, "legacy.pdnn")]
    else:
        specs = [("legacy.pdnn", {"size": "legacy", "style": "pdnn"}, None),
                 ("large.pdnn", {"size": "large", "style": "pdnn"}, None),
                 ("large.kaldi", {"size": "large", "style": "kaldi"}, "large.pdnn")]
    wanted = set(a.models.split(",")) if a.models else None
    out = []
    for name, spec, twin in specs:
        if wanted and name not in wanted and not any(name == o[2] for o in specs if o[0] in wanted):
            continue
        path = common.ensure_model(a.workdir, **spec)
        dims = common.model_dims(spec.get("size"), spec.get("dims"))
        out.append({"name": name, "path": path, "dims": dims, "style": spec["style"], "twin": twin,
                    "bytes": path.stat().st_size,
                    "largest_layer_bytes": 4 * max(dims[i] * dims[i + 1] for i in range(len(dims) - 1))})
    return out


def svdistill_info(path: Path) -> Dict[str, Any]:
    p = subprocess.run(common.svdistill_cmd() + ["info", "--json", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        return {"ok": False, "error": p.stderr.strip()[-500:]}
    d = json.loads(p.stdout)
    return {"ok": True, **{k: d.get(k) for k in ("num_components", "input_dim", "output_dim", "num_params")},
            "kinds": [c["kind"] for c in d.get("components", [])]}


def weights(path: Path) -> List[np.ndarray]:
    return [np.array(c.weight) for c in svdistill.iter_components(str(path)) if c.kind in WEIGHT_KINDS]


def layer_errors(orig: List[np.ndarray], out_path: Path) -> Dict[str, Any]:
    """Pair each original layer with its factors W2 (out x k) W1 (k x in) in the
    output (or the unchanged matrix) and measure ||W - W2 W1||_F / ||W||_F."""
    try:
        out = weights(out_path)
    except svdistill.Error as e:
        return {"ok": False, "error": str(e)}
    layers, j = [], 0
    for w in orig:
        if j < len(out) and out[j].shape == w.shape:
            approx, rank, j = out[j].astype(np.float64), None, j + 1
        else:
            if j + 1 >= len(out):
                return {"ok": False, "error": f"output has too few weight matrices for layer {len(layers) + 1}"}
            w1, w2 = out[j], out[j + 1]
            if not (w1.shape[1] == w.shape[1] and w2.shape[0] == w.shape[0] and w2.shape[1] == w1.shape[0]):
                return {"ok": False, "error": f"layer {len(layers) + 1}: factors {w2.shape} x {w1.shape} "
                                              f"do not make {w.shape}"}
            approx, rank, j = w2.astype(np.float64) @ w1.astype(np.float64), int(w1.shape[0]), j + 2
        w64 = w.astype(np.float64)
        layers.append({"shape": list(w.shape), "rank": rank,
                       "rel_err": float(np.linalg.norm(w64 - approx) / np.linalg.norm(w64))})
    if j != len(out):
        return {"ok": False, "error": f"{len(out) - j} extra weight matrices in the output", "layers": layers}
    return {"ok": True, "layers": layers}


def run_model(a, m: Dict[str, Any], legacy_results: Dict[str, Any]) -> Dict[str, Any]:
    pdir = a.workdir / "pipeline"
    logs = a.workdir / "logs"
    pdir.mkdir(parents=True, exist_ok=True)
    legacy_script = common.shared_bench_dir() / "legacy_pipeline.py"
    sv_out = pdir / f"{m['name']}.svdistill.txt"
    lg_out = pdir / f"{m['name']}.legacy.txt"
    frac = str(a.rank_fraction)
    sv_cmd = common.svdistill_cmd() + ["compress", "--rank-fraction", frac, str(m["path"]), str(sv_out)]
    run_legacy = m["twin"] is None
    common.warm(m["path"])
    runs: Dict[str, List[Dict[str, Any]]] = {"svdistill": [], "legacy": []}
    stages: List[Dict[str, float]] = []
    for r in range(a.repeats):
        sv_out.unlink(missing_ok=True)
        runs["svdistill"].append(common.run_measured(sv_cmd, logs, f"compress-{m['name']}"))
        log(f"  {m['name']} run {r + 1}/{a.repeats}: svdistill {runs['svdistill'][-1]['wall_s']:.2f} s")
        if run_legacy:
            lg_out.unlink(missing_ok=True)
            js = pdir / f"{m['name']}.legacy.json"
            lg_cmd = [sys.executable, str(legacy_script), str(m["path"]), "--rank-frac", frac,
                      "--workdir", str(pdir / f"legacy-work-{m['name']}"), "--json", str(js), "--out", str(lg_out)]
            runs["legacy"].append(common.run_measured(lg_cmd, logs, f"legacy-{m['name']}"))
            stages.append(json.loads(js.read_text())["stages_s"])
            log(f"  {m['name']} run {r + 1}/{a.repeats}: legacy {runs['legacy'][-1]['wall_s']:.2f} s")
    res: Dict[str, Any] = {k: v for k, v in m.items() if k != "path"}
    res["path"] = str(m["path"])
    res["commands"] = {"svdistill": " ".join(sv_cmd)}
    res["svdistill"] = {"runs": runs["svdistill"],
                        **{k: median(x[k] for x in runs["svdistill"]) for k in ("wall_s", "rss_mb", "cpu_s")}}
    if run_legacy:
        res["commands"]["legacy"] = " ".join(lg_cmd)
        res["legacy"] = {"runs": runs["legacy"], "stages_s": {k: median(s[k] for s in stages) for k in stages[0]},
                         "on": m["name"],
                         **{k: median(x[k] for x in runs["legacy"]) for k in ("wall_s", "rss_mb", "cpu_s")}}
        legacy_results[m["name"]] = res["legacy"]
        legacy_output = lg_out
    else:
        res["legacy"] = dict(legacy_results[m["twin"]], on=m["twin"])
        legacy_output = a.workdir / "pipeline" / f"{m['twin']}.legacy.txt"
    # validity and quality (untimed)
    res["info"] = {"input": svdistill_info(m["path"]), "svdistill": svdistill_info(sv_out),
                   "legacy": svdistill_info(legacy_output)}
    orig = weights(m["path"])
    res["errors"] = {"svdistill": layer_errors(orig, sv_out), "legacy": layer_errors(orig, legacy_output)}
    del orig
    return res


def report(out: Dict[str, Any]) -> str:
    interp = out["interpreter"]["rss_mb"]
    parts = [f"### bench_pipeline ({'QUICK, ' if out['quick'] else ''}medians of {out['repeats']} runs, "
             f"rank fraction {out['rank_fraction']})", "", common.format_environment(out["environment"]),
             f"- interpreter baseline: `python -c 'import svdistill'` peaks at {interp:.0f} MB RSS and takes "
             f"{out['interpreter']['wall_s']:.2f} s (a fixed cost inside every svdistill time below)", ""]
    rows, qrows, goals, srows = [], [], [], []
    for r in out["models"]:
        sv, lg = r["svdistill"], r["legacy"]
        ratio = lg["wall_s"] / sv["wall_s"]
        limit = interp + 3 * r["largest_layer_bytes"] / MB
        lg_name = "legacy" + ("" if lg["on"] == r["name"] else f" (on {lg['on']})")
        rows.append([f"`{r['name']}` {'-'.join(map(str, r['dims']))}", f"{r['bytes'] / MB:.0f}",
                     f"{sv['wall_s']:.2f}", f"{lg['wall_s']:.2f}", f"{ratio:.1f}x",
                     f"{sv['rss_mb']:.0f}", f"{lg['rss_mb']:.0f}",
                     f"{interp:.0f} + 3 x {r['largest_layer_bytes'] / MB:.1f} = {limit:.0f}",
                     goal(sv["rss_mb"] <= limit)])
        es, el = r["errors"]["svdistill"], r["errors"]["legacy"]
        ok_info = all(r["info"][k]["ok"] and r["info"][k]["input_dim"] == r["info"]["input"]["input_dim"]
                      and r["info"][k]["output_dim"] == r["info"]["input"]["output_dim"]
                      for k in ("svdistill", "legacy"))
        if es["ok"] and el["ok"]:
            big = max(range(len(es["layers"])), key=lambda i: es["layers"][i]["shape"][0] * es["layers"][i]["shape"][1])
            ls, ll = es["layers"][big], el["layers"][big]
            same_ranks = [x["rank"] for x in es["layers"]] == [x["rank"] for x in el["layers"]]
            qrows.append([f"`{r['name']}`", "yes" if ok_info else "**NO**",
                          f"{r['info']['input']['num_params']:,} -> {r['info']['svdistill']['num_params']:,}",
                          ",".join(str(x["rank"]) for x in es["layers"]), "yes" if same_ranks else "**NO**",
                          f"{big + 1} ({ls['shape'][0]}x{ls['shape'][1]})", f"{ls['rel_err']:.5f}",
                          f"{ll['rel_err']:.5f}",
                          f"{max(x['rel_err'] / y['rel_err'] for x, y in zip(es['layers'], el['layers'])):.4f}"])
        else:
            qrows.append([f"`{r['name']}`", "yes" if ok_info else "**NO**", "-", "-", "-", "-",
                          es.get("error", "ok"), el.get("error", "ok"), "-"])
        goals.append([f"`{r['name']}` end to end (text in, text out)", f"{ratio:.1f}x",
                      f">= {GOAL_SPEEDUP:.0f}x", goal(ratio >= GOAL_SPEEDUP)])
        goals.append([f"`{r['name']}` svdistill peak RSS", f"{sv['rss_mb']:.0f} MB", f"<= {limit:.0f} MB",
                      goal(sv["rss_mb"] <= limit)])
        if lg["on"] == r["name"]:
            st = lg["stages_s"]
            srows.append([f"`{r['name']}`", *(f"{st.get(k, 0):.2f}" for k in ("index", "cut", "loadtxt", "svd",
                                                                              "savetxt", "post")),
                          f"{lg['wall_s']:.2f}", f"{sv['wall_s']:.2f}", f"{sv['cpu_s']:.2f}"])
    parts += ["**End to end** (`svdistill compress --rank-fraction F IN OUT` vs `legacy_pipeline.py "
              "--rank-frac F`; wall time and peak RSS of the child process)", "",
              md_table(["model", "text MB", "svdistill s", "legacy s", "legacy ÷ svdistill", "svdistill RSS MB",
                        "legacy RSS MB", "RSS limit MB (interp + 3x largest layer)", "within"], rows,
                       "lrrrrrrrl"), "",
              "**Outputs** (`svdistill info` on both; relative Frobenius error ||W - W2 W1|| / ||W|| per layer)", "",
              md_table(["model", "both valid", "params (svdistill)", "ranks", "legacy same ranks",
                        "largest layer", "rel.err svdistill", "rel.err legacy", "max err ratio svd/legacy"],
                       qrows, "llrlllrrr"), "",
              "**Where the time goes** (legacy stage medians from its --json; svdistill wall and CPU time)", "",
              md_table(["model", "index", "cut", "loadtxt", "svd", "savetxt", "post", "legacy total",
                        "svdistill wall", "svdistill CPU"], srows), "",
              "**Goals**", "", md_table(["goal", "measured", "target", "met"], goals, "lrrl")]
    return "\n".join(parts)


def main() -> int:
    ap = common.base_parser(__doc__)
    ap.add_argument("--rank-fraction", type=float, default=0.25)
    ap.add_argument("--models", default=None,
                    help="comma list of model names to run (default all: legacy.pdnn, large.pdnn, large.kaldi; "
                         "--quick: legacy.pdnn, legacy.kaldi)")
    a = common.finish_args(ap.parse_args())
    env = common.environment(ENV_STATE)
    models = models_for(a)
    interp = common.interpreter_rss(a.workdir / "logs", a.repeats)
    legacy_results: Dict[str, Any] = {}
    results = []
    for m in models:
        log(f"{m['name']}: {m['path']} ({m['bytes'] / MB:.0f} MB)")
        results.append(run_model(a, m, legacy_results))
    out = {"environment": env, "repeats": a.repeats, "quick": a.quick, "rank_fraction": a.rank_fraction,
           "interpreter": interp, "models": results}
    print(report(out))
    common.write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
