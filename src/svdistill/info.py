"""``nnet-info`` for any nnet1 model, streamed one component at a time."""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from .io import PathOrFile, iter_components
from .model import Component


def moment_statistics(v: np.ndarray) -> Dict[str, float]:
    """min, max, mean, stddev, skewness, kurtosis as Kaldi's MomentStatistics computes them.

    Powers are float32 element products as in Kaldi; sums accumulate in float64
    and are rounded to float32, so the printed digits match nnet-info's.
    """
    x = np.asarray(v, dtype=np.float32).ravel()
    n = x.size
    if n == 0:
        nan = float("nan")
        return dict(min=nan, max=nan, mean=nan, stddev=nan, skewness=nan, kurtosis=nan)
    f32 = np.float32

    def fsum(y: np.ndarray) -> np.float32:
        return f32(y.sum(dtype=np.float64))

    mean = f32(fsum(x) / f32(n))
    a = x - mean
    a2 = a * a
    var = f32(fsum(a2) / f32(n))
    a3 = a2 * a
    a4 = a3 * a
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        skew = f32(float(fsum(a3)) / math.pow(float(var), 1.5) / n) if var > 0 else float("nan")
        kurt = f32(float(f32(f32(fsum(a4) / f32(var * var)) / f32(n))) - 3.0) if var > 0 else float("nan")
    return dict(min=float(x.min()), max=float(x.max()), mean=float(mean),
                stddev=math.sqrt(float(var)), skewness=float(skew), kurtosis=float(kurt))


def _g(x: float) -> str:
    """C++ ostream default formatting (%g, 6 digits); NaN prints as x86 Kaldi prints 0/0."""
    if math.isnan(x):
        return "-nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "%g" % x


def _ms_text(s: Dict[str, float]) -> str:
    return (f" ( min {_g(s['min'])}, max {_g(s['max'])}, mean {_g(s['mean'])}, "
            f"stddev {_g(s['stddev'])}, skewness {_g(s['skewness'])}, kurtosis {_g(s['kurtosis'])} ) ")


def component_info(c: Component) -> Dict[str, Any]:
    """One component's entry of :func:`info` (kind, dims, parameter statistics)."""
    d: Dict[str, Any] = {"kind": c.kind, "marker": c.marker, "input_dim": c.input_dim,
                         "output_dim": c.output_dim, "num_params": c.num_params}
    stats = {name: moment_statistics(p) for name, p in c.params.items()}
    if stats:
        d["stats"] = stats
    if c.coefs:
        d["coefs"] = {k.strip("<>"): v for k, v in c.coefs.items()}
    if c.ints is not None:
        d["ints"] = c.ints.tolist()
    return d


def _kaldi_marker(kind: str, marker: str) -> str:
    return marker if kind == "Unknown" else (
        {"Relu": "<relu>", "Linear": "<linear>"}.get(kind, f"<{kind}>"))


def _component_text(d: Dict[str, Any]) -> str:
    kind, st, cf = d["kind"], d.get("stats", {}), d.get("coefs", {})
    if kind == "AffineTransform":
        return (f"\n  linearity{_ms_text(st['linearity'])}, lr-coef {_g(cf['LearnRateCoef'])}, "
                f"max-norm {_g(cf['MaxNorm'])}\n  bias{_ms_text(st['bias'])}, "
                f"lr-coef {_g(cf['BiasLearnRateCoef'])}")
    if kind == "LinearTransform":
        return f"\n  linearity{_ms_text(st['linearity'])}, lr-coef {_g(cf['LearnRateCoef'])}"
    if kind == "ParametricRelu":
        return (f"\n  alpha{_ms_text(st['alpha'])}, alpha-lr-coef {_g(cf['AlphaLearnRateCoef'])}"
                f"\n  beta{_ms_text(st['beta'])}, beta-lr-coef {_g(cf['BetaLearnRateCoef'])}")
    if kind in ("AddShift", "Rescale"):
        name = "shift_data" if kind == "AddShift" else "scale_data"
        return f"\n  {name}{_ms_text(st[name])}, lr-coef {_g(cf['LearnRateCoef'])}"
    if kind == "Splice":
        return "\n  frame_offsets [" + "".join(f" {v}" for v in d["ints"]) + " ]"
    if kind == "Copy":
        return f"\n  min {min(d['ints']) - 1}, max {max(d['ints']) - 1}" if d["ints"] else ""
    if kind == "BlockSoftmax":
        return "\n  softmax-dims " + "".join(f"{v} " for v in d["ints"])
    if kind == "Dropout":
        return f"<DropoutRate> {_g(cf['DropoutRate'])}"
    return ""


def info(src: PathOrFile) -> Dict[str, Any]:
    """What ``nnet-info`` reports, as a dict; streams, so any model size works.

    Returns
    -------
    dict
        ``num_components``, ``input_dim``, ``output_dim``, ``num_params`` (as
        :attr:`Model.num_params`: the sum over the components whose count is known),
        ``uncounted`` (1-based indices of components kept as raw bytes whose count is
        unknown: an updatable kind svdistill does not model, or an unknown marker; their
        ``num_params`` is None), ``binary``, ``dialect`` and ``components``: a list of
        dicts with ``kind``, ``marker``, ``input_dim``, ``output_dim``, ``num_params``,
        and where present ``stats`` (per parameter: min, max, mean, stddev, skewness,
        kurtosis), ``coefs`` and ``ints``.
    """
    stream = iter_components(src)
    comps: List[Dict[str, Any]] = [component_info(c) for c in stream]
    counts = [c["num_params"] for c in comps]
    return {
        "file": stream.name,
        "binary": stream.binary,
        "dialect": stream.dialect,
        "num_components": len(comps),
        "input_dim": comps[0]["input_dim"] if comps else 0,
        "output_dim": comps[-1]["output_dim"] if comps else 0,
        "num_params": int(sum(n for n in counts if n is not None)),
        "uncounted": [i for i, n in enumerate(counts, 1) if n is None],
        "components": comps,
    }


def format_info(d: Dict[str, Any]) -> str:
    """The text ``nnet-info`` prints, byte for byte, from :func:`info`'s dict."""
    lines = [f"num-components {d['num_components']}"]
    if d["num_components"] == 0:
        return lines[0] + "\n"
    params = f"number-of-parameters {_g(float(np.float32(d['num_params'])) / 1e6)} millions"
    uncounted = d.get("uncounted") or []
    if uncounted:  # nnet-info cannot load these; the total must not pass for complete
        which = ", ".join(f"{i} {_kaldi_marker(d['components'][i - 1]['kind'], d['components'][i - 1]['marker'])}"
                          for i in uncounted)
        params += (f" without component{'s' if len(uncounted) > 1 else ''} {which}"
                   f" (kept as raw bytes, parameter count unknown)")
    lines += [f"input-dim {d['input_dim']}", f"output-dim {d['output_dim']}", params]
    for i, c in enumerate(d["components"], 1):
        lines.append(f"component {i} : {_kaldi_marker(c['kind'], c['marker'])}, "
                     f"input-dim {c['input_dim']}, output-dim {c['output_dim']}, "
                     + _component_text(c))
    return "\n".join(lines) + "\n"
