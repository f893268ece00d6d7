"""Singular-value spectra of a model's affine layers, and the ranks they imply."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


from . import _core
from .io import iter_components
from .model import Model
from .selection import plan_layers, scan_structure

#: Energy fractions reported by default.
FRACTIONS = (0.5, 0.8, 0.9, 0.95, 0.99)


def spectrum(model, *, layers: Optional[str] = None,
             fractions: Sequence[float] = FRACTIONS) -> Dict[str, Any]:
    """Per affine layer: all singular values and the ranks needed for each energy fraction.

    Streams the model (one layer in memory at a time) and writes nothing.

    Returns
    -------
    dict
        ``layers``: a list of dicts with ``index``, ``marker``, ``out``, ``in``,
        ``singular_values`` (descending), ``energy_ranks`` ({fraction: rank}),
        ``nuclear_ranks`` (the same for sum(s)) and ``break_even_rank`` (the
        largest rank that still saves parameters: k(out+in) < out*in).
    """
    structure = scan_structure(model)
    plans = {p.index: p for p in plan_layers(structure, layers, False)}
    out: List[Dict[str, Any]] = []
    stream = model if isinstance(model, Model) else iter_components(model)
    for idx, comp in enumerate(stream, 1):
        if idx not in plans:
            continue
        s = _core.singular_values(comp.weight)
        sl = s.tolist()
        o, i = comp.output_dim, comp.input_dim
        out.append({
            "index": idx, "marker": comp.marker, "out": o, "in": i,
            "singular_values": sl,
            "energy_ranks": {str(f): int(_core.energy_rank(sl, float(f))) for f in fractions},
            "nuclear_ranks": {str(f): int(_core.nuclear_rank(sl, float(f))) for f in fractions},
            "break_even_rank": int((o * i - 1) // (o + i)),
        })
    return {"layers": out, "fractions": [float(f) for f in fractions]}


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
    lines.append("E<f>: smallest rank keeping that fraction of sum(s^2); even: largest rank that "
                 "still saves parameters")
    return "\n".join(lines)
