"""Singular-value spectra of a model's affine layers, and the ranks they imply."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from . import _core
from .calibration import DEFAULT_FRAMES, check_options, collect
from .errors import option_error
from .io import iter_components, read
from .linalg import _fraction_option
from .model import Model
from .selection import LayerSpec, plan_layers, scan_structure

#: Energy fractions reported by default.
FRACTIONS = (0.5, 0.8, 0.9, 0.95, 0.99)


def spectrum(model, *, layers: LayerSpec = None,
             fractions: Sequence[float] = FRACTIONS, calibration=None, feature_transform=None,
             calibration_frames: int = DEFAULT_FRAMES) -> Dict[str, Any]:
    """Per affine layer: all singular values and the ranks needed for each energy fraction.

    Streams the model (one layer in memory at a time) and writes nothing.
    ``layers`` selects as in :func:`svdistill.compress`; ``fractions`` are
    numbers in (0, 1].

    Returns
    -------
    dict
        ``layers``: a list of dicts with ``index``, ``marker``, ``out``, ``in``,
        ``singular_values`` (descending), ``energy_ranks`` ({fraction: rank}),
        ``nuclear_ranks`` (the same for sum(s)) and ``break_even_rank`` (the
        largest rank that still saves parameters as compress writes the layer in
        the model's own dialect: k(out+in) < out*in, or k(out+in+1) < out*in
        for PDNN, whose first factor has a zero bias); ``dialect``: that dialect.

    With ``calibration`` (features, and ``feature_transform``, ``calibration_frames``
    as :func:`svdistill.compress` takes them) the spectra are the whitened ones,
    the singular values of W R^T: each one squared is the output energy on those
    features that dropping it costs, and the energy ranks count output energy, as
    ``compress(..., calibration=...)`` does. Then ``calibration`` in the result
    says on how many frames. The model is read whole.
    """
    try:
        fr = None if isinstance(fractions, (str, bytes)) else list(fractions)
    except TypeError:
        fr = None
    if not fr:
        raise option_error("fractions", f"must be a non-empty list of numbers in (0, 1], got {fractions!r}")
    fractions = [_fraction_option("fractions", f) for f in fr]
    calibration_frames = check_options(calibration, feature_transform, calibration_frames)
    if calibration is not None and not isinstance(model, Model):  # calibration runs the model: read it whole
        model = read(model)
    structure = scan_structure(model)
    plans = {p.index: p for p in plan_layers(structure, layers, False)}
    cal = None
    if calibration is not None:
        cal = collect(model, calibration, sorted(plans), feature_transform=feature_transform,
                      frames=calibration_frames)
    out: List[Dict[str, Any]] = []
    stream = model if isinstance(model, Model) else iter_components(model)
    dialect = "kaldi"
    for idx, comp in enumerate(stream, 1):
        if idx == 1:
            dialect = "kaldi" if stream.binary else stream.dialect
        if idx not in plans:
            continue
        inputs = cal.layers[idx].inputs() if cal is not None else None
        try:
            sl, energy, nuclear, even = _core.layer_spectrum(comp._c, fractions, dialect, inputs)
        except _core.Error as e:
            raise _core.Error(f"component {idx} {comp.marker}: {e}") from None
        out.append({
            "index": idx, "marker": comp.marker, "out": comp.output_dim, "in": comp.input_dim,
            "singular_values": sl,
            "energy_ranks": {str(f): int(k) for f, k in zip(fractions, energy)},
            "nuclear_ranks": {str(f): int(k) for f, k in zip(fractions, nuclear)},
            "break_even_rank": int(even),
        })
    d = {"layers": out, "fractions": [float(f) for f in fractions], "dialect": dialect}
    if cal is not None:
        d["calibration"] = {"source": cal.source, "frames": cal.frames, "utterances": cal.utterances,
                            "seconds": cal.seconds}
    return d


def format_spectrum(d: Dict[str, Any]) -> str:
    fr = d["fractions"]
    head = f"{'comp':>4}  {'shape':>11}  " + "  ".join(f"{'E' + format(f, 'g'):>6}" for f in fr) + \
        f"  {'even':>5}  {'s_max':>9}"
    lines = [head, "-" * len(head)]
    for L in d["layers"]:
        s = L["singular_values"]
        lines.append(f"{L['index']:>4}  {str(L['out']) + 'x' + str(L['in']):>11}  " +
                     "  ".join(f"{L['energy_ranks'][str(f)]:>6}" for f in fr) +
                     f"  {L['break_even_rank']:>5}  {s[0] if s else 0:>9.4g}")
    c = d.get("calibration")
    lines.append("E<f>: smallest rank keeping that fraction of sum(s^2)"
                 + (f" (whitened: output energy on {c['frames']:,} frames of {c['source']})" if c else "")
                 + "; even: largest rank that still saves parameters")
    return "\n".join(lines)
