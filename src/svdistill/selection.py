"""Which layers compress touches: a fast structure scan and the --layers SPEC."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Union

from . import _core
from .errors import RankError
from .model import Model


@dataclass
class Entry:
    """Kind and dims of one component, from a scan that skips parameter data."""
    index: int
    kind: str
    marker: str
    out: int
    inp: int

    @property
    def num_params(self) -> int:
        k, o, i = self.kind, self.out, self.inp
        return {"AffineTransform": o * i + o, "LinearTransform": o * i, "AddShift": i,
                "Rescale": i, "ParametricRelu": 2 * o}.get(k, 0)


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
        reader = _core.Reader(os.fspath(model), True)
        comps = []
        while True:
            c = reader.next()
            if c is None:
                break
            comps.append((c.kind, c.marker, c.output_dim, c.input_dim))
    return [Entry(i, k, m, o, n) for i, (k, m, o, n) in enumerate(comps, 1)]


def parse_spec(spec: str, n_components: int) -> List[int]:
    """'2,4-6' -> [2, 4, 5, 6] (1-based, sorted, unique), checked against the model size."""
    out = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise RankError(f"--layers: cannot read {part!r} (use 1-based indices and ranges "
                              "such as 2,4-6)") from None
        if a < 1 or b < a:
            raise RankError(f"--layers: bad range {part!r}")
        if b > n_components:
            raise RankError(f"--layers: component {b} does not exist (the model has "
                              f"{n_components} components)")
        out.update(range(a, b + 1))
    if not out:
        raise RankError("--layers: no component selected")
    return sorted(out)


def plan_layers(structure: List[Entry], spec: Optional[str], skip_output_layer: bool) -> List[LayerPlan]:
    """The affine layers to factor, in model order."""
    affine = [e for e in structure if e.kind == "AffineTransform"]
    if spec:
        chosen = parse_spec(spec, len(structure))
        bad = [structure[i - 1] for i in chosen if structure[i - 1].kind != "AffineTransform"]
        if bad:
            e = bad[0]
            raise RankError(f"--layers: component {e.index} is {e.marker}, not an "
                              f"<AffineTransform> (affine layers: "
                              f"{', '.join(str(a.index) for a in affine) or 'none'})")
        entries = [structure[i - 1] for i in chosen]
    else:
        entries = affine
    if skip_output_layer and affine:
        entries = [e for e in entries if e.index != affine[-1].index]
    return [LayerPlan(e.index, e.marker, e.out, e.inp) for e in entries]
