"""From compress()'s options to the core's structs, and parameters counted as written.

One rank-k factorisation of one affine layer is decided in the core
(``_core.compress_layer``: rank, rounding, gain, SVD method, split, dialect,
whitening, statistics); these are the Python sides of its option structs, the
dialect a model is written in, and what a copied component counts once written.
"""
from __future__ import annotations

import io
import warnings
from typing import Any, List, Optional

import numpy as np

from . import _core
from .errors import NOT_GIVEN, RankError, option_error, renamed
from .io import iter_components, write
from .linalg import _int_option, _method_option, _seed, _svd_options
from .model import Component
from .selection import LayerPlan

__all__ = ["factor_layer", "factored_params"]


def factored_params(k: int, out: int, inp: int, dialect: str = "kaldi") -> int:
    """Parameters of what :func:`factor_layer` writes for an out x in affine layer at
    rank k in ``dialect``, its bias included. The budget and ``min_gain`` count this."""
    if dialect not in ("kaldi", "pdnn"):
        raise option_error("dialect", f"must be 'kaldi' or 'pdnn', got {dialect!r}", RankError)
    return int(_core.factored_params(int(k), int(out), int(inp), _core.per_rank_params(dialect))) + int(out)


_SPLITS = {"sqrt": _core.Split.sqrt, "left": _core.Split.left, "right": _core.Split.right}


_METHODS = {"auto": _core.SvdMethod.auto, "randomized": _core.SvdMethod.randomized,
            "exact": _core.SvdMethod.exact}


def _svd_struct(method: str, oversamples: Optional[int], n_iter: Optional[int], seed: int) -> "_core.SvdOptions":
    p, q = _svd_options(oversamples, n_iter)
    o = _core.SvdOptions()
    o.method, o.oversamples, o.n_iter, o.seed = _METHODS[_method_option(method)], p, q, seed
    return o


def _factor_struct(split: str, dialect: str, spectrum: bool = False) -> "_core.FactorOptions":
    if split not in _SPLITS:
        raise option_error("split", f"must be sqrt, left or right, got {split!r}", RankError)
    f = _core.FactorOptions()
    f.split, f.dialect, f.spectrum = _SPLITS[split], dialect, spectrum
    return f


def _rank_policy(policy: str, value, min_gain: float, round_to: int,
                 rank: Optional[int] = None) -> "_core.RankPolicy":
    """The core's RankPolicy for compress()'s checked policy (``rank``: a fixed policy's, per layer)."""
    p = _core.RankPolicy()
    if policy in ("rank", "ranks", "param_budget"):
        p.rule = _core.RankRule.fixed
        if rank is not None:
            p.rank = rank
    else:
        p.rule = {"rank_fraction": _core.RankRule.fraction, "energy": _core.RankRule.energy,
                  "nuclear": _core.RankRule.nuclear}[policy]
        p.value = float(value)
    p.min_gain, p.round_to = min_gain, round_to
    return p


def _fixed_policy(k: int, always: bool = False) -> "_core.RankPolicy":
    p = _core.RankPolicy()
    p.rule, p.rank, p.always = _core.RankRule.fixed, int(k), always
    return p


def factor_layer(comp: Component, k: int, *, split: str = "sqrt", dialect: str = "kaldi",
                 method: str = "auto", oversamples: Optional[int] = None,
                 n_iter: Optional[int] = None, seed=0, n_oversamples: Any = NOT_GIVEN,
                 random_state: Any = NOT_GIVEN) -> List[Component]:
    """The components replacing an affine layer by its rank-k pair (always factored,
    whether or not that saves parameters).

    Kaldi dialect: ``<LinearTransform> k in`` (LearnRateCoef copied) then
    ``<AffineTransform> out k`` (bias, LearnRateCoef, BiasLearnRateCoef, MaxNorm).
    PDNN dialect: ``<affinetransform> k in`` with a zero bias, ``<linear> k k``,
    ``<affinetransform> out k`` with the bias: the layout older tools read.
    """
    if n_oversamples is not NOT_GIVEN:  # the old names (deprecated)
        oversamples = renamed("factor_layer", "n_oversamples", "oversamples", n_oversamples, oversamples, None)
    if random_state is not NOT_GIVEN:
        seed = renamed("factor_layer", "random_state", "seed", random_state, seed, 0)
    if dialect not in ("kaldi", "pdnn"):
        raise option_error("dialect", f"must be 'kaldi' or 'pdnn', got {dialect!r}", RankError)
    if comp.kind != "AffineTransform":
        raise RankError(f"factor_layer needs an <AffineTransform>, got {comp.marker}")
    lim = min(comp.output_dim, comp.input_dim)
    k = _int_option("rank", k, 1, lim, cls=RankError)
    new, _ = _core.compress_layer(comp._c, _fixed_policy(k, always=True),
                                  _svd_struct(method, oversamples, n_iter, _seed(seed)),
                                  _factor_struct(split, dialect))
    return [Component(c) for c in new]


def _output_dialect(dialect: Optional[str], binary: Optional[bool], src_binary: bool,
                    src_dialect: str) -> str:
    """The dialect write() uses for these arguments and this source."""
    if dialect is not None:
        return dialect
    return "kaldi" if (src_binary if binary is None else binary) else src_dialect


#: The kinds the writer converts between dialects (cpp/nnet1/writer.cc: <relu> and a
#: plain <ParametricRelu>, <linear>); every other kind is written as it was read.
_CONVERTED_KINDS = ("Relu", "ParametricRelu", "Linear")


def _written_params(comp: Component, dialect: str) -> int:
    """Parameters of a copied component once written in ``dialect``.

    The writer converts between dialects (PDNN's ``<relu>`` becomes Kaldi's
    ``<ParametricRelu>`` with alpha and beta vectors, a plain one becomes
    ``<relu>``; Kaldi drops ``<linear>``), so the small components are counted
    by writing them; weight matrices and raw kinds are written as they are.
    """
    n = comp.num_params or 0
    if comp.kind not in _CONVERTED_KINDS:
        return n
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write([comp], buf, binary=False, dialect=dialect)
    buf.seek(0)
    return sum(c.num_params or 0 for c in iter_components(buf))


def _finite_weight(comp: Component, plan: LayerPlan) -> np.ndarray:
    W = comp.weight
    assert W is not None  # plans name AffineTransforms only
    if not np.isfinite(W).all():
        raise _core.Error(f"component {plan.index} {plan.marker}: the weight matrix has nan/inf entries")
    return W
