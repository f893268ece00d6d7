"""Which layers compress touches: a fast structure scan and the --layers SPEC."""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .errors import RankError, option_error
from .model import Model


@dataclass
class Entry:
    """Kind and dims of one component, from a scan that skips parameter data."""
    index: int
    kind: str
    marker: str
    out: int
    inp: int


@dataclass
class LayerPlan:
    index: int   # 1-based, as nnet-info numbers components
    marker: str
    out: int
    inp: int
    rank: Optional[int] = None  # decided by the policy; -1 = leave unchanged


def scan_structure(model: Union[Model, str, "os.PathLike[str]"]) -> List[Entry]:
    """Kinds and dims of every component; for a path, without parsing the weights."""
    if isinstance(model, Model):
        comps = [(c.kind, c.marker, c.output_dim, c.input_dim) for c in model]
    else:
        comps = _core.scan_structure(os.fspath(model))
    return [Entry(i, k, m, o, n) for i, (k, m, o, n) in enumerate(comps, 1)]


#: What ``layers`` may be: a spec string, one index, or a sequence of indices.
LayerSpec = Union[str, int, Sequence[int], None]


def _affine_list(structure: List[Entry]) -> str:
    return ", ".join(str(e.index) for e in structure if e.kind == "AffineTransform") or "none"


def _check_index(i: int, text: str, n: int) -> None:
    if i < 1:
        raise option_error("layers", f"takes 1-based component indices (as nnet-info numbers them), "
                                     f"got {text!r}", RankError)
    if i > n:
        raise option_error("layers", f"names component {i}, which does not exist (the model has {n} "
                                     "components)", RankError)


def _parse_text(spec: str, structure: List[Entry]) -> List[int]:
    """'2,4-6': single indices must name affine layers; a range selects the affine layers in it."""
    n = len(structure)
    chosen: List[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not lo.strip():
            raise option_error("layers", f"takes 1-based component indices (as nnet-info numbers them), "
                                         f"got {part!r}", RankError)
        if dash and not hi.strip():
            raise option_error("layers", f"range {part!r} needs both ends, e.g. {lo.strip()}-{n}",
                               RankError)
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise option_error("layers", f"cannot read {part!r}: use 1-based component indices and "
                                         "ranges such as 2,4-6", RankError) from None
        _check_index(a, part, n)
        _check_index(b, part, n)
        if b < a:
            raise option_error("layers", f"range {part!r} runs backwards", RankError)
        if not dash:
            chosen.append(a)
            continue
        inside = [e.index for e in structure[a - 1:b] if e.kind == "AffineTransform"]
        if not inside:
            raise option_error("layers", f"range {part!r} contains no <AffineTransform> (affine layers: "
                                         f"{_affine_list(structure)})", RankError)
        chosen.extend(inside)
    return chosen


def select_layers(structure: List[Entry], spec: LayerSpec) -> List[Entry]:
    """The affine layers ``spec`` selects, in model order, each once.

    ``spec``: None (every AffineTransform); a string of 1-based indices and
    ranges as nnet-info numbers components (``"2,4-6"``), where a range selects
    the affine layers inside it and a single index must name one; or an int or
    a sequence of ints, each naming an affine layer.
    """
    affine = [e for e in structure if e.kind == "AffineTransform"]
    if spec is None:
        return affine
    n = len(structure)
    if isinstance(spec, str):
        chosen = _parse_text(spec, structure)
    else:
        items: Any = [spec] if isinstance(spec, (numbers.Integral, np.integer)) else spec  # checked below
        try:
            items = list(items)
        except TypeError:
            items = None
        bad = items is None or any(not isinstance(i, (numbers.Integral, np.integer))
                                   or isinstance(i, (bool, np.bool_)) for i in items)
        if bad or isinstance(spec, (bool, np.bool_, bytes)):
            raise option_error("layers", "must be a string such as '2,4-6' or a list of 1-based "
                                         f"component indices, got {spec!r}", RankError)
        chosen = [int(i) for i in items]
        for i in chosen:
            _check_index(i, str(i), n)
    if not chosen:
        raise option_error("layers", f"selects no component (got {spec!r})", RankError)
    for i in chosen:
        e = structure[i - 1]
        if e.kind != "AffineTransform":
            raise option_error("layers", f"names component {i}, a {e.marker}, which is not an "
                                         f"<AffineTransform> (affine layers: {_affine_list(structure)})",
                               RankError)
    return [structure[i - 1] for i in sorted(set(chosen))]


def plan_layers(structure: List[Entry], spec: LayerSpec, skip_output_layer: bool) -> List[LayerPlan]:
    """The affine layers to factor, in model order."""
    entries = select_layers(structure, spec)
    affine = [e for e in structure if e.kind == "AffineTransform"]
    if skip_output_layer and affine:
        entries = [e for e in entries if e.index != affine[-1].index]
    return [LayerPlan(e.index, e.marker, e.out, e.inp) for e in entries]
