"""Truncated-SVD restructuring of nnet1 models (Xue, Li & Gong, Interspeech 2013).

Each selected ``<AffineTransform>`` W (out x in) with bias b becomes a rank-k
pair: a k x in ``<LinearTransform>`` followed by an out x k ``<AffineTransform>``
that keeps b and the learn-rate coefficients. Everything else is copied as is.
Models are streamed one component at a time; the ``param_budget`` policy makes
a first pass for the spectra.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .io import PathOrFile, iter_components, write
from .linalg import _choose_method, _seed
from .errors import RankError, option_error
from .model import Component, Model
from .report import CompressReport, LayerReport
from .selection import LayerPlan, plan_layers, scan_structure

__all__ = ["compress", "factor_layer", "POLICIES", "RankError"]

#: The rank policies; exactly one must be given.
POLICIES = ("rank", "ranks", "rank_fraction", "energy", "nuclear", "param_budget")


def _check_policy(kw: Dict[str, object]) -> Tuple[str, object]:
    given = [(k, v) for k, v in kw.items() if v is not None]
    if not given:
        raise RankError("no rank policy: give exactly one of --rank, --ranks, --rank-fraction, "
                        "--energy, --nuclear, --param-budget")
    if len(given) > 1:
        names = ", ".join("--" + k.replace("_", "-") for k, _ in given)
        raise RankError(f"conflicting rank policies {names}: give exactly one")
    name, value = given[0]
    if isinstance(value, bool) or (name == "ranks" and any(isinstance(v, bool) for v in value)):  # type: ignore
        raise RankError(f"--{name.replace('_', '-')} must be a number, got {value!r}")
    if name == "rank" and (not isinstance(value, (int, np.integer)) or value < 1):
        raise RankError(f"--rank must be a positive integer, got {value!r}")
    if name == "ranks":
        vals = list(value)  # type: ignore[arg-type]
        if not vals or any(not isinstance(v, (int, np.integer)) or v < 1 for v in vals):
            raise RankError(f"--ranks must be positive integers, got {value!r}")
    if name in ("rank_fraction", "energy", "nuclear") and not (0 < float(value) <= 1):  # type: ignore[arg-type]
        raise RankError(f"--{name.replace('_', '-')} must lie in (0, 1], got {value!r}")
    if name == "param_budget" and not (0 < float(value) <= 1):  # type: ignore[arg-type]
        raise RankError(f"--param-budget must lie in (0, 1], got {value!r}")
    return name, value


def _split_factors(U: np.ndarray, s: np.ndarray, Vt: np.ndarray, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(first k x in, second out x k) with the singular values placed by ``split``."""
    s32 = s.astype(np.float32)
    if split == "sqrt":
        r = np.sqrt(s32)
        return Vt * r[:, None], U * r[None, :]
    if split == "left":   # the out x k factor (U) carries them
        return Vt.copy(), U * s32[None, :]
    if split == "right":  # the k x in factor carries them (the legacy scripts' choice)
        return Vt * s32[:, None], U.copy()
    raise RankError(f"--split must be sqrt, left or right, got {split!r}")


def factor_layer(comp: Component, k: int, *, split: str = "sqrt", dialect: str = "kaldi",
                 factors: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
                 method: str = "auto", n_oversamples: Optional[int] = None,
                 n_iter: Optional[int] = None, random_state=0) -> List[Component]:
    """The components replacing an affine layer by its rank-k pair.

    Kaldi dialect: ``<LinearTransform> k in`` (LearnRateCoef copied) then
    ``<AffineTransform> out k`` (bias, LearnRateCoef, BiasLearnRateCoef, MaxNorm).
    PDNN dialect: ``<affinetransform> k in`` with a zero bias, ``<linear> k k``,
    ``<affinetransform> out k`` with the bias: the layout older tools read.
    """
    if factors is None:
        W = comp.weight
        m = _choose_method(method, k, W.shape[0], W.shape[1], n_oversamples)
        U, s, Vt, *_ = _core.truncated_svd(W, k, m, -1 if n_oversamples is None else n_oversamples,
                                             -1 if n_iter is None else n_iter, _seed(random_state))
    else:
        U, s, Vt = factors
    first, second = _split_factors(U, s, Vt, split)
    lrc = comp.learn_rate_coef if comp.learn_rate_coef is not None else 1.0
    out = Component.affine(second, comp.bias, learn_rate_coef=lrc,
                           bias_learn_rate_coef=comp.bias_learn_rate_coef or 0.0,
                           max_norm=comp.max_norm or 0.0)
    if comp.bias_learn_rate_coef is None:
        out.bias_learn_rate_coef = 1.0
    if dialect == "pdnn":
        return [Component.affine(first, np.zeros(k, np.float32), learn_rate_coef=lrc),
                Component.activation("Linear", k), out]
    return [Component.linear(first, learn_rate_coef=lrc), out]


def _fixed_rank(plan: LayerPlan, policy: str, value, position: int) -> int:
    lim = min(plan.out, plan.inp)
    if policy == "rank":
        k = int(value)
    elif policy == "ranks":
        k = int(list(value)[position])
    else:  # rank_fraction, as the legacy scripts round it
        k = max(1, int(round(float(value) * lim)))
    if k > lim:
        raise RankError(f"component {plan.index} {plan.marker} ({plan.out}x{plan.inp}): rank {k} "
                        f"exceeds min(out, in) = {lim}")
    return k


def _round(k: int, round_to: int, plan: LayerPlan) -> int:
    return int(_core.round_rank(int(k), int(max(1, round_to)), plan.out, plan.inp))


class _Progress:
    """One self-overwriting stderr line, only on a terminal."""

    def __init__(self, total: int, enabled: Optional[bool]) -> None:
        self.total = total
        self.on = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()

    def update(self, done: int, what: str) -> None:
        if self.on and self.total:
            width = 24
            fill = int(width * done / self.total)
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} "
                             f"{what[:40]:<40} {time.perf_counter() - self.t0:6.1f}s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on and self.total:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def compress(model: Union[Model, PathOrFile], *,
             rank: Optional[int] = None, ranks: Optional[Sequence[int]] = None,
             rank_fraction: Optional[float] = None, energy: Optional[float] = None,
             nuclear: Optional[float] = None, param_budget: Optional[float] = None,
             min_gain: float = 0.0, round_to: int = 1, layers: Optional[str] = None,
             skip_output_layer: bool = False, split: str = "sqrt",
             method: str = "auto", n_oversamples: Optional[int] = None, n_iter: Optional[int] = None,
             random_state=0, output: Optional[PathOrFile] = None, binary: Optional[bool] = None,
             dialect: Optional[str] = None, digits: str = "shortest",
             progress: Optional[bool] = None,
             spectra: bool = False) -> Tuple[Optional[Model], CompressReport]:
    """Replace affine layers by truncated-SVD factor pairs.

    Parameters
    ----------
    model : Model, path or binary file
        The model to compress. A path is streamed (memory: the largest layer).
    rank, ranks, rank_fraction, energy, nuclear, param_budget
        The rank policy; give exactly one. ``rank``: the same k everywhere.
        ``ranks``: one k per selected layer. ``rank_fraction``: round(f x
        min(out, in)). ``energy``: smallest k keeping that fraction of sum(s^2),
        found by an adaptive randomized SVD whose retained energy is exact.
        ``nuclear``: the same with sum(s). ``param_budget``: the whole model's
        parameters <= f x the original, ranks chosen to minimise the total
        squared Frobenius error (two passes).
    min_gain : float
        Factor a layer only if k(out+in) <= (1 - min_gain) x out x in; layers
        that would not shrink are always left unchanged.
    round_to : int
        Round ranks up to a multiple of this (GEMM-friendly shapes).
    layers : str, optional
        1-based component indices as nnet-info numbers them, e.g. ``"2,4-6"``;
        default: every AffineTransform.
    skip_output_layer : bool
        Leave the last AffineTransform alone.
    split : {"sqrt", "left", "right"}
        Where the singular values go: sqrt(s) on both factors (default), all on
        the out x k factor ("left", U), or all on the k x in factor ("right").
    method, n_oversamples, n_iter, random_state
        SVD settings, as in :func:`svdistill.linalg.truncated_svd`.
    output : path or binary file, optional
        Stream the result there (atomically) instead of returning a Model.
    binary, dialect, digits
        Output encoding (default: the input's), as in :func:`svdistill.write`.
    progress : bool, optional
        Progress line on stderr (default: only when stderr is a terminal).
    spectra : bool
        Also compute every selected layer's full spectrum (for plots; costs an
        extra singular-value computation per layer). Stored in ``report.spectra``.

    Returns
    -------
    (Model or None, CompressReport)
        The new model (None when written to ``output``) and the per-layer report.

    Raises
    ------
    svdistill.RankError
        Missing or conflicting policies, a rank above min(out, in), a ``ranks``
        list of the wrong length, selected components that are not affine.
    """
    policy, value = _check_policy(dict(rank=rank, ranks=ranks, rank_fraction=rank_fraction,
                                       energy=energy, nuclear=nuclear, param_budget=param_budget))
    if split not in ("sqrt", "left", "right"):
        raise RankError(f"split must be sqrt, left or right, got {split!r}")
    if not 0 <= min_gain < 1:
        raise option_error("min_gain", f"must lie in [0, 1), got {min_gain!r}", RankError)
    if int(round_to) < 1:
        raise option_error("round_to", f"must be a positive integer, got {round_to!r}", RankError)
    if dialect not in (None, "kaldi", "pdnn"):
        raise RankError(f"dialect must be 'kaldi' or 'pdnn', got {dialect!r}")
    t_start = time.perf_counter()
    seed = _seed(random_state)

    in_memory = isinstance(model, Model)
    if not in_memory and not _rereadable(model):
        model = _read_all(model)  # stdin or a stream: a second pass needs it in memory
        in_memory = True
    structure = scan_structure(model)
    plans = plan_layers(structure, layers, skip_output_layer)
    if policy == "ranks" and len(list(value)) != len(plans):  # type: ignore[arg-type]
        raise RankError(f"--ranks has {len(list(value))} values but {len(plans)} layers are "  # type: ignore[arg-type]
                        f"selected ({', '.join(str(p.index) for p in plans)})")
    for pos, p in enumerate(plans):
        if policy in ("rank", "ranks", "rank_fraction"):
            p.rank = _round(_fixed_rank(p, policy, value, pos), round_to, p)

    if policy == "param_budget":
        _plan_budget(model, plans, structure, float(value), min_gain, round_to)  # type: ignore[arg-type]

    by_index = {p.index: p for p in plans}
    total = len(plans)
    prog = _Progress(total, progress)
    reports: List[LayerReport] = []
    all_spectra: Dict[int, List[float]] = {}
    params_before = 0
    params_after = 0
    src = _SourceInfo()

    def produce() -> Iterator[Component]:
        nonlocal params_before, params_after
        stream = model if in_memory else iter_components(model)
        src.binary = stream.binary
        src.dialect = getattr(model, "dialect", "kaldi") if in_memory else "kaldi"
        for idx, comp in enumerate(stream, 1):
            n = comp.num_params or 0
            params_before += n
            if idx == 1:
                src.dialect = stream.dialect  # a stream knows it after one component
            out_dialect = dialect or ("kaldi" if binary else src.dialect)
            plan = by_index.get(idx)
            if plan is None:
                params_after += n
                yield comp
                continue
            prog.update(len(reports), f"component {idx} {comp.output_dim}x{comp.input_dim}")
            sv = _core.singular_values(comp.weight) if (spectra or policy == "nuclear") else None
            if spectra:
                all_spectra[idx] = sv.tolist()
            rep, new = _compress_one(comp, plan, policy, value, min_gain, round_to, split,
                                     out_dialect, method, n_oversamples, n_iter, seed, sv)
            reports.append(rep)
            params_after += sum(c.num_params or 0 for c in new)
            yield from new

    try:
        if output is not None:
            write(_Stream(produce(), src), output, binary=binary, dialect=dialect, digits=digits)
            result = None
        else:
            comps = list(produce())
            out_binary = src.binary if binary is None else bool(binary)
            result = Model(comps, binary=out_binary,
                           dialect=dialect or ("kaldi" if out_binary else src.dialect), source=None)
    finally:
        prog.close()
    report = CompressReport(layers=reports, params_before=params_before, params_after=params_after,
                            policy={policy: value if policy != "ranks" else list(value)},  # type: ignore
                            seconds=time.perf_counter() - t_start,
                            options=dict(min_gain=min_gain, round_to=round_to, split=split,
                                         method=method, layers=layers,
                                         skip_output_layer=skip_output_layer, random_state=seed),
                            spectra=all_spectra)
    return result, report


class _SourceInfo:
    binary = False
    dialect = "kaldi"


class _Stream:
    """Compressed components, reporting the source's encoding and dialect to write()."""

    def __init__(self, it: Iterator[Component], info: _SourceInfo) -> None:
        self._it = it
        self._info = info

    def __iter__(self) -> "_Stream":
        return self

    def __next__(self) -> Component:
        return next(self._it)

    @property
    def binary(self) -> bool:
        return self._info.binary

    @property
    def dialect(self) -> str:
        return self._info.dialect


def _rereadable(src) -> bool:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src) != "-"
    return False


def _read_all(src) -> Model:
    from .io import read
    return read(src)


def _compress_one(comp: Component, plan: LayerPlan, policy: str, value, min_gain: float,
                  round_to: int, split: str, dialect: str, method: str,
                  n_oversamples: Optional[int], n_iter: Optional[int],
                  seed: int, sv: Optional[np.ndarray] = None) -> Tuple[LayerReport, List[Component]]:
    t0 = time.perf_counter()
    W = comp.weight
    out_dim, in_dim = W.shape
    if not np.isfinite(W).all():
        raise _core.Error(f"component {plan.index} {plan.marker}: the weight matrix has nan/inf entries")
    before = comp.num_params or 0
    lim = min(out_dim, in_dim)
    factors = None
    used_method = method
    total_energy = None
    if policy == "energy":
        if method == "exact":
            U, s, Vt, total_energy, *_ = _core.truncated_svd(W, lim, "exact", -1, -1, seed)
            k = int(_core.energy_rank(s.tolist(), float(value), total_energy))
            factors = (U[:, :k], s[:k], Vt[:k])
        else:
            U, s, Vt, total_energy, *_ = _core.adaptive_energy_svd(
                W, float(value), -1 if n_oversamples is None else n_oversamples,
                -1 if n_iter is None else n_iter, seed)
            k = len(s)
            factors = (U, s, Vt)
            used_method = "adaptive"
    elif policy == "nuclear":
        k = int(_core.nuclear_rank(sv.tolist(), float(value)))
    else:
        k = int(plan.rank)  # fixed policies and the budget's pass
    k = max(k, 1)
    k_rounded = _round(k, round_to, plan)
    if factors is not None and k_rounded != k:
        factors = None  # more than the adaptive sketch kept: recompute at the rounded rank
    k = k_rounded
    if plan.rank == -1 or not _core.worth_factoring(k, out_dim, in_dim, min_gain):
        return LayerReport(index=plan.index, marker=plan.marker, out=out_dim, inp=in_dim, rank=None,
                           params_before=before, params_after=before, retained_energy=1.0,
                           rel_error=0.0, seconds=time.perf_counter() - t0, method="-",
                           note="unchanged: factoring would not reduce parameters"
                           + (f" by {min_gain:.0%}" if min_gain > 0 else "")), [comp]
    if factors is None:
        used_method = _choose_method(method, k, out_dim, in_dim, n_oversamples)
        U, s, Vt, total_energy, *_ = _core.truncated_svd(
            W, k, used_method, -1 if n_oversamples is None else n_oversamples,
            -1 if n_iter is None else n_iter, seed)
        factors = (U, s, Vt)
    U, s, Vt = factors
    if total_energy is None:
        total_energy = float(_core.frobenius_sq(W))
    kept = float(np.sum(np.square(s, dtype=np.float64)))
    retained = kept / total_energy if total_energy > 0 else 1.0
    new = factor_layer(comp, k, split=split, dialect=dialect, factors=factors)
    after = sum(c.num_params or 0 for c in new)
    return LayerReport(index=plan.index, marker=plan.marker, out=out_dim, inp=in_dim, rank=k,
                       params_before=before, params_after=after, retained_energy=min(retained, 1.0),
                       rel_error=float(np.sqrt(max(0.0, 1.0 - retained))),
                       seconds=time.perf_counter() - t0, method=used_method), new


def _plan_budget(model, plans: List[LayerPlan], structure, fraction: float, min_gain: float,
                 round_to: int) -> None:
    """Pass 1 of --param-budget: spectra of the selected layers, then greedy ranks."""
    wanted = {p.index: p for p in plans}
    spectra: Dict[int, np.ndarray] = {}
    stream = model if isinstance(model, Model) else iter_components(model)
    for idx, comp in enumerate(stream, 1):
        if idx in wanted:
            spectra[idx] = _core.singular_values(comp.weight)
    total_params = sum(s.num_params or 0 for s in structure)
    selected_weights = sum(p.out * p.inp for p in plans)
    fixed = total_params - selected_weights  # biases and everything not selected
    budget = fraction * total_params - fixed
    def cheapest(p: LayerPlan) -> int:  # a layer min_gain forbids factoring stays whole
        k0 = min(max(1, round_to), p.out, p.inp)
        return k0 * (p.out + p.inp) if _core.worth_factoring(k0, p.out, p.inp, min_gain) else p.out * p.inp

    minimum = sum(cheapest(p) for p in plans)
    if budget < minimum:
        raise RankError(f"--param-budget {fraction} allows {budget + fixed:,.0f} parameters but the "
                        f"smallest factorisation needs {minimum + fixed:,} (rank {max(1, round_to)} "
                        "in every selected layer that may be factored)")
    ranks = _core.budget_ranks([(p.out, p.inp, spectra[p.index].tolist()) for p in plans],
                               float(budget), float(min_gain), int(max(1, round_to)))
    for p, k in zip(plans, ranks):
        p.rank = int(k)
