"""Ranks under ``param_budget``: the first pass of compress() over the selected layers.

Uncalibrated, the greedy of the core (``_core.budget_ranks``) minimises the total
squared Frobenius error; calibrated, it minimises the model's output loss measured
with each layer alone truncated (README, "Calibrated compression").
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from . import _core
from . import calibration as _cal
from .errors import RankError, option_error
from .factoring import (
    _factor_struct,
    _finite_weight,
    _fixed_policy,
    _output_dialect,
    _svd_struct,
    _written_params,
    factored_params,
)
from .io import iter_components
from .model import Component, Model
from .selection import LayerPlan

#: How calibrated layers are put on one scale under param_budget: "measured" (the
#: model's output loss with the layer alone truncated, measured at a few ranks),
#: "relative" (each layer's relative output error weighs alike) or "absolute" (raw
#: output energies). benchmarks/bench_calibration.py measures all three; the README
#: says why the first.
_BUDGET_RULE = "measured"


def _plan_budget(model, plans: List[LayerPlan], fraction: float, min_gain: float, round_to: int,
                 binary: Optional[bool], dialect: Optional[str], cal: Optional[_cal.Calibration] = None,
                 split: str = "sqrt", method: str = "auto", oversamples: Optional[int] = None,
                 n_iter: Optional[int] = None, seed: int = 0) -> None:
    """Pass 1 of --param-budget: spectra of the selected layers, then greedy ranks.

    The budget holds for the model as written: every count is in the output's
    dialect (a factored layer's as :func:`factored_params` gives it, every
    other component's as the writer emits it).

    Calibrated, layers are compared by what their truncation costs at the model's
    output: the loss (KL to the input model's posteriors) with each layer alone
    truncated is measured on the first calibration frames at ranks 1 and 1/4x..4x
    those that equal relative output errors would give (:func:`_budget_curves`),
    and the greedy minimises the sum of those losses, as it minimises the
    Frobenius error uncalibrated.
    """
    wanted = {p.index: p for p in plans}
    spectra: Dict[int, np.ndarray] = {}
    totals: Dict[int, float] = {}
    stream = model if isinstance(model, Model) else iter_components(model)
    params_in = 0
    written = []  # (index, count as written) of the components not selected
    out_dialect = "kaldi"
    for idx, comp in enumerate(stream, 1):
        if idx == 1:
            out_dialect = _output_dialect(dialect, binary, stream.binary, stream.dialect)
        params_in += comp.num_params or 0
        if idx in wanted:
            W = _finite_weight(comp, wanted[idx])
            if cal is None:
                spectra[idx] = _core.singular_values(W)
            else:
                wh = cal.layers[idx].whitening()
                M, energy = _core.whiten_weight(W, wh)
                spectra[idx] = _core.singular_values(M)
                # E||W (x - mean)||^2 without the ridge: the output's variation, the errors' scale.
                totals[idx] = max(float(energy) - wh.ridge * float(_core.frobenius_sq(W)), 0.0)
        else:
            written.append(_written_params(comp, out_dialect))
    # Fixed: unselected components and the selected layers' biases, which every
    # option keeps; the greedy shares out the rest among the weights.
    fixed = sum(written) + sum(p.out for p in plans)
    limit = fraction * params_in
    budget = limit - fixed
    per_rank = _core.per_rank_params(out_dialect)
    k0 = max(1, round_to)

    def cheapest(p: LayerPlan) -> int:  # a layer min_gain forbids factoring stays whole
        k = min(k0, p.out, p.inp)
        if _core.worth_factoring(k, p.out, p.inp, min_gain, per_rank):
            return factored_params(k, p.out, p.inp, out_dialect) - p.out
        return p.out * p.inp

    minimum = sum(cheapest(p) for p in plans)
    if budget < minimum:
        raise option_error("param_budget", f"{fraction} allows {int(limit):,} of the input's {params_in:,} "
                                           f"parameters, but the smallest factorisation needs "
                                           f"{minimum + fixed:,} as written in the {out_dialect} dialect "
                                           f"(rank {k0} in every selected layer that may be factored)",
                           RankError)

    def solve(scale: Dict[int, float]) -> List[int]:  # scale: what one unit of s^2 costs, per layer
        return [int(k) for k in _core.budget_ranks(
            [(p.out, p.inp, (spectra[p.index] * np.sqrt(scale[p.index])).tolist()) for p in plans],
            float(budget), float(min_gain), int(k0), per_rank)]

    if cal is None or _BUDGET_RULE == "absolute":
        ranks = solve({p.index: 1.0 for p in plans})
    else:
        first = solve({p.index: 1.0 / totals[p.index] if totals[p.index] > 0 else 0.0 for p in plans})
        if _BUDGET_RULE == "relative":
            ranks = first
        else:  # measured
            curves = _budget_curves(model, plans, first, cal, split, out_dialect, method, oversamples,
                                    n_iter, seed)
            ranks = [int(k) for k in _core.budget_ranks(
                [(p.out, p.inp, curves[p.index].tolist()) for p in plans],
                float(budget), float(min_gain), int(k0), per_rank)]
    for p, k in zip(plans, ranks):
        p.rank = k


def _budget_curves(model: Model, plans: List[LayerPlan], ranks: List[int], cal: _cal.Calibration,
                   split: str, dialect: str, method: str, oversamples: Optional[int],
                   n_iter: Optional[int], seed: int) -> Dict[int, np.ndarray]:
    """Per layer, a pseudo-spectrum whose tail sums are the measured output loss of that
    layer alone truncated at rank k (linear between ranks 1 and 1/4x .. 4x the
    equal-relative-error rank, monotone; 0 at full rank)."""
    svd_opts = _svd_struct(method, oversamples, n_iter, seed)
    factor_opts = _factor_struct(split, dialect)
    factor_opts.output_errors = False  # the trials are measured at the model's output instead
    per_rank = _core.per_rank_params(dialect)
    grids = {}
    keyed = {}
    for p, k in zip(plans, ranks):
        comp = model.components[p.index - 1]
        full = min(p.out, p.inp)
        if k <= 0:
            k = max(1, int(_core.break_even_rank(p.out, p.inp, per_rank)) // 2)
        grid = sorted({1} | {min(full, max(1, int(round(k * f)))) for f in (0.25, 0.5, 1, 2, 4)})
        grid = [g for g in grid if g < full]
        grids[p.index] = grid
        inputs = cal.layers[p.index].inputs()
        for g in grid:
            new, _ = _core.compress_layer(comp._c, _fixed_policy(g, always=True), svd_opts, factor_opts, inputs)
            keyed[(p.index, g)] = [Component(c) for c in new]
    losses = _cal.layer_losses(model, cal, keyed)
    out = {}
    for p in plans:
        full = min(p.out, p.inp)
        pts = [(g, losses[(p.index, g)]) for g in grids[p.index]] + [(full, 0.0)]
        ks = np.arange(1, full + 1)
        L = np.interp(ks, [x for x, _ in pts], [y for _, y in pts])
        L = np.minimum.accumulate(L)  # more rank never costs more
        d = np.maximum(-np.diff(L), 0.0)
        out[p.index] = np.sqrt(np.concatenate([[L[0]], d]))
    return out
