"""Truncated-SVD restructuring of nnet1 models (Xue, Li & Gong, Interspeech 2013).

Each selected ``<AffineTransform>`` W (out x in) with bias b becomes a rank-k
pair: a k x in ``<LinearTransform>`` followed by an out x k ``<AffineTransform>``
that keeps b and the learn-rate coefficients. Everything else is copied as is.
Models are streamed one component at a time; the ``param_budget`` policy makes
a first pass for the spectra.
"""
from __future__ import annotations

import io
import os
import time
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from . import _core
from . import calibration as _cal
from .errors import RankError, option_error
from .io import ComponentStream, PathOrFile, iter_components, write
from .linalg import _choose_method, _fraction_option, _int_option, _seed, _svd_options
from .model import Component, Model
from .progress import Progress
from .report import CompressReport, LayerReport
from .selection import LayerPlan, LayerSpec, plan_layers, scan_structure

__all__ = ["compress", "factor_layer", "factored_params", "POLICIES", "RankError"]

#: The rank policies; exactly one must be given.
POLICIES = ("rank", "ranks", "rank_fraction", "energy", "nuclear", "param_budget")


def _check_policy(kw: Dict[str, object]) -> Tuple[str, object]:
    given = [(k, v) for k, v in kw.items() if v is not None]
    if not given:
        # Both spellings: the API's keywords and the CLI's flags (the CLI calls this).
        raise RankError("no rank policy: give exactly one of rank, ranks, rank_fraction, energy, nuclear, "
                        "param_budget (--rank, --ranks, --rank-fraction, --energy, --nuclear, --param-budget)")
    if len(given) > 1:
        others = [k for k, _ in given[1:]]
        raise option_error(given[0][0], "and " + " and ".join("{%s}" % k for k in others) + " are conflicting "
                           "rank policies: give exactly one", RankError, others=others)
    name, value = given[0]
    if name == "rank":
        return name, _int_option("rank", value, 1, cls=RankError)
    if name == "ranks":
        try:
            vals = None if isinstance(value, (str, bytes)) else list(value)  # type: ignore[call-overload]
        except TypeError:
            vals = None
        if not vals:
            raise option_error("ranks", f"must be a non-empty list of positive integers, got {value!r}",
                               RankError)
        return name, [_int_option("ranks", v, 1, cls=RankError) for v in vals]
    return name, _fraction_option(name, value, RankError)


#: Parameters per unit of rank that a factored layer has beyond its two factors,
#: by output dialect: PDNN's first factor is an <affinetransform> whose zero bias
#: has length k (its <linear> k x k is the identity, without parameters).
_PER_RANK = {"kaldi": 0, "pdnn": 1}


def factored_params(k: int, out: int, inp: int, dialect: str = "kaldi") -> int:
    """Parameters of what :func:`factor_layer` writes for an out x in affine layer at
    rank k in ``dialect``, its bias included. The budget and ``min_gain`` count this."""
    return int(_core.factored_params(int(k), int(out), int(inp), _PER_RANK[dialect])) + int(out)


def _worth(k: int, out: int, inp: int, min_gain: float, dialect: str) -> bool:
    return bool(_core.worth_factoring(int(k), int(out), int(inp), float(min_gain), _PER_RANK[dialect]))


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
    raise option_error("split", f"must be sqrt, left or right, got {split!r}", RankError)


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
    if dialect not in _PER_RANK:
        raise option_error("dialect", f"must be 'kaldi' or 'pdnn', got {dialect!r}", RankError)
    if comp.kind != "AffineTransform":
        raise RankError(f"factor_layer needs an <AffineTransform>, got {comp.marker}")
    if factors is None:
        W = comp.weight
        assert W is not None  # an AffineTransform has one
        p, q = _svd_options(n_oversamples, n_iter)
        m = _choose_method(method, k, W.shape[0], W.shape[1], n_oversamples)
        U, s, Vt, *_ = _core.truncated_svd(W, k, m, p, q, _seed(random_state))
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
        raise option_error(policy, f"{'value ' if policy == 'ranks' else ''}{k} exceeds min(out, in) = "
                                   f"{lim} of component {plan.index} {plan.marker} ({plan.out}x{plan.inp})",
                           RankError)
    return k


def _round(k: int, round_to: int, plan: LayerPlan) -> int:
    return int(_core.round_rank(int(k), int(max(1, round_to)), plan.out, plan.inp))


def _nothing_selected(structure, layers: LayerSpec) -> None:
    """Raises the RankError that says why no layer is left to factor."""
    affine = [e.index for e in structure if e.kind == "AffineTransform"]
    if not affine:
        raise RankError("the model has no <AffineTransform>: there is no layer to compress")
    if layers is None:
        raise option_error("skip_output_layer", f"leaves no layer to compress: the model's only "
                                                f"<AffineTransform> (component {affine[-1]}) is its output "
                                                "layer", RankError)
    raise option_error("skip_output_layer", f"leaves no layer to compress: {{layers}} {layers} selects only the "
                                            f"output layer (component {affine[-1]}; affine layers: "
                                            f"{', '.join(map(str, affine))})", RankError, others=["layers"])


def compress(model: Union[Model, PathOrFile], *,
             rank: Optional[int] = None, ranks: Optional[Sequence[int]] = None,
             rank_fraction: Optional[float] = None, energy: Optional[float] = None,
             nuclear: Optional[float] = None, param_budget: Optional[float] = None,
             min_gain: float = 0.0, round_to: int = 1, layers: LayerSpec = None,
             skip_output_layer: bool = False, split: str = "sqrt",
             method: str = "auto", n_oversamples: Optional[int] = None, n_iter: Optional[int] = None,
             random_state=0, output: Optional[PathOrFile] = None, binary: Optional[bool] = None,
             dialect: Optional[str] = None, digits: str = "shortest",
             progress: Optional[bool] = None,
             spectra: bool = False, calibration=None, feature_transform=None,
             calibration_frames: int = _cal.DEFAULT_FRAMES,
             refine: bool = False) -> Tuple[Optional[Model], CompressReport]:
    """Replace affine layers by truncated-SVD factor pairs.

    Parameters
    ----------
    model : Model, path or binary file
        The model to compress. A path is streamed (memory: the largest layer).
    rank, ranks, rank_fraction, energy, nuclear, param_budget
        The rank policy; give exactly one. ``rank``: the same k everywhere.
        ``ranks``: one k per selected layer. ``rank_fraction``: round(f x
        min(out, in)). ``energy``: a rank k whose factors keep at least that
        fraction of ||W||_F^2 (their retained energy is computed exactly): with
        ``method="exact"`` the smallest such k, from the exact SVD; otherwise an
        adaptive randomized SVD grows its sketch until it keeps the fraction, and
        k is the smallest rank by the sketch's singular values, which never
        exceed the true ones, so k is never below the smallest rank and may lie
        a little above it (README). ``nuclear``: the smallest k keeping that
        fraction of sum(s), read off the full spectrum. ``param_budget``: the whole model's
        parameters, as written in the output's dialect, <= f x the input's, ranks chosen to minimise the total
        squared Frobenius error (two passes).
    min_gain : float
        Factor a layer only if its factored weights (:func:`factored_params`
        less the bias) are <= (1 - min_gain) x out x in; layers that would not
        shrink are always left unchanged.
    round_to : int
        Round ranks up to a multiple of this (GEMM-friendly shapes).
    layers : str, int or list of int, optional
        1-based component indices as nnet-info numbers them: a string such as
        ``"1,3-6"`` (a single index must name an AffineTransform; a range
        selects the AffineTransforms inside it) or a list of indices of
        AffineTransforms; default: every AffineTransform.
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
    calibration : rspecifier, dict or array, optional
        Features for data-aware truncation (README, "Calibrated compression"):
        one forward pass of the input model over their first
        ``calibration_frames`` frames collects each selected layer's input mean
        and covariance; each layer is then factored to minimise its output error
        on those inputs (the SVD of W R^T, Sigma + ridge = R^T R, mapped back;
        the bias absorbs the mean of what is cut). Every policy then works on
        these whitened spectra: ``energy`` and ``nuclear`` mean output energy;
        ``param_budget`` compares layers by the loss their truncation adds at the
        model's output, measured on the first frames. The model is read whole.
    feature_transform : Model or path, optional
        Run before the model on the calibration features (Kaldi's
        ``--feature-transform``).
    calibration_frames : int
        Frames of ``calibration`` used, from its start (default 100,000).
    refine : bool
        After the whitened truncation, one more pass over the calibration
        features refits each factored layer's out x k factor and bias in closed
        form (least squares) so that, fed the student's own inputs, it best
        reproduces the input model's layer output: it corrects what the layers
        before have changed. The report's ``output_error`` is then that fit's.
        Needs ``calibration`` readable twice (not stdin).

    Returns
    -------
    (Model or None, CompressReport)
        The new model (None when written to ``output``) and the per-layer report.

    Raises
    ------
    svdistill.RankError
        Missing or conflicting policies, a rank above min(out, in), a ``ranks``
        list of the wrong length, selected components that are not affine, a
        budget too small for rank 1 (or ``round_to``) everywhere, and any
        option value out of its range (the message names the keyword; the SVD
        settings method, n_oversamples, n_iter and random_state raise
        :class:`svdistill.Error`, as in :func:`svdistill.linalg.truncated_svd`).
    """
    policy, value = _check_policy(dict(rank=rank, ranks=ranks, rank_fraction=rank_fraction,
                                       energy=energy, nuclear=nuclear, param_budget=param_budget))
    if split not in ("sqrt", "left", "right"):
        raise option_error("split", f"must be sqrt, left or right, got {split!r}", RankError)
    min_gain = _fraction_option("min_gain", min_gain, RankError, low_open=False)
    round_to = _int_option("round_to", round_to, 1, cls=RankError)
    if dialect not in (None, "kaldi", "pdnn"):
        raise option_error("dialect", f"must be 'kaldi' or 'pdnn', got {dialect!r}", RankError)
    _svd_options(n_oversamples, n_iter)
    _choose_method(method, 1, 1, 1, None)
    for name, v in (("n_oversamples", n_oversamples), ("n_iter", n_iter)):
        if v is not None and method == "exact":  # it would be ignored
            raise option_error(name, f"{v} applies to the randomized SVD, and {{method}} is exact", others=["method"])
    if not isinstance(refine, (bool, np.bool_)):
        raise option_error("refine", f"must be True or False, got {refine!r}")
    if calibration is None:
        for name, given in (("feature_transform", feature_transform is not None),
                            ("calibration_frames", calibration_frames != _cal.DEFAULT_FRAMES),
                            ("refine", bool(refine))):
            if given:  # it would do nothing
                raise option_error(name, "applies to the {calibration} features, and none were given",
                                   others=["calibration"])
    else:
        calibration_frames = _cal.frames_option(calibration_frames)
        from .distill.data import _is_stdin  # (distill imports this module)
        if refine and isinstance(calibration, str) and _is_stdin(calibration):
            raise option_error("refine", "reads the {calibration} features again for each layer, and stdin "
                                         "cannot be read twice: give a file, an scp or 'ark:COMMAND |'",
                               others=["calibration"])
    t_start = time.perf_counter()
    seed = _seed(random_state)

    in_memory = isinstance(model, Model)
    if not in_memory and (calibration is not None or not _rereadable(model)):
        # stdin or a stream: a second pass needs it in memory; calibration runs the whole model
        model = _read_all(model)
        in_memory = True
    # A Model, or a path (_rereadable): no file object is left.
    structure = scan_structure(cast("Union[Model, str, os.PathLike[str]]", model))
    plans = plan_layers(structure, layers, skip_output_layer)
    if not plans:  # writing the model unchanged would look like a compression that did nothing
        _nothing_selected(structure, layers)
    if policy == "ranks" and len(value) != len(plans):  # type: ignore[arg-type]
        raise option_error("ranks", f"has {len(value)} values but {len(plans)} layers are "  # type: ignore
                                    f"selected ({', '.join(str(p.index) for p in plans) or 'none'})",
                           RankError)
    for pos, p in enumerate(plans):
        if policy in ("rank", "ranks", "rank_fraction"):
            p.rank = _round(_fixed_rank(p, policy, value, pos), round_to, p)

    cal: Optional[_cal.Calibration] = None
    if calibration is not None:
        assert isinstance(model, Model)
        ft = None if feature_transform is None else (
            feature_transform if isinstance(feature_transform, Model) else _read_all(feature_transform))
        with Progress("calibration", unit="frames", enabled=progress) as bar:
            cal = _cal.collect(model, calibration, [p.index for p in plans], feature_transform=ft,
                               frames=calibration_frames, progress=bar.update)

    if policy == "param_budget":
        _plan_budget(model, plans, float(value), min_gain, round_to, binary, dialect,  # type: ignore[arg-type]
                     cal, split, method, n_oversamples, n_iter, seed)

    by_index = {p.index: p for p in plans}
    total = len(plans)
    prog = Progress("compress", total=total, unit="layers", enabled=progress)
    reports: List[LayerReport] = []
    all_spectra: Dict[int, List[float]] = {}
    params_before = 0
    params_after = 0
    src = _SourceInfo()

    placed: Dict[int, Tuple[int, int]] = {}  # factored layer -> (first position in the output, count)
    n_out = [0]

    def produce() -> Iterator[Component]:
        nonlocal params_before, params_after
        stream: Union[Model, ComponentStream] = model if isinstance(model, Model) else iter_components(model)
        src.binary = stream.binary
        src.dialect = getattr(model, "dialect", "kaldi") if in_memory else "kaldi"
        for idx, comp in enumerate(stream, 1):
            n = comp.num_params or 0
            params_before += n
            if idx == 1:
                src.dialect = stream.dialect  # a stream knows it after one component
            out_dialect = _output_dialect(dialect, binary, src.binary, src.dialect)
            plan = by_index.get(idx)
            if plan is None:
                params_after += _written_params(comp, out_dialect)
                n_out[0] += 1
                yield comp
                continue
            prog.update(len(reports), f"component {idx} {comp.output_dim}x{comp.input_dim}")
            t0 = time.perf_counter()  # the layer's time includes its spectrum
            white = _Whitened(_finite_weight(comp, plan), cal.layers[idx]) if cal is not None else None
            needs_spectrum = spectra or policy == "nuclear"
            sv = _core.singular_values(_finite_weight(comp, plan) if white is None else white.M) \
                if needs_spectrum else None
            if spectra:
                assert sv is not None
                all_spectra[idx] = sv.tolist()
            rep, new = _compress_one(comp, plan, policy, value, min_gain, round_to, split,
                                     out_dialect, method, n_oversamples, n_iter, seed, sv, t0, white)
            reports.append(rep)
            params_after += sum(c.num_params or 0 for c in new)
            if rep.rank is not None:
                placed[idx] = (n_out[0], len(new))
            n_out[0] += len(new)
            yield from new

    try:
        if refine:
            assert cal is not None
            comps = list(produce())  # refined before anything is written
            refined = _cal.refine(cast(Model, model), comps, placed, cal, calibration, calibration_frames)
            for r in reports:
                if r.index in refined:
                    r.output_error = refined[r.index]
                    r.note = "refined"
            result = None
            if output is not None:
                write(_Stream(iter(comps), src), output, binary=binary, dialect=dialect, digits=digits)
            else:
                out_binary = src.binary if binary is None else bool(binary)
                result = Model(comps, binary=out_binary,
                               dialect=dialect or ("kaldi" if out_binary else src.dialect), source=None)
        elif output is not None:
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
                            spectra=all_spectra,
                            calibration=None if cal is None else dict(
                                source=cal.source, frames=cal.frames, utterances=cal.utterances,
                                seconds=cal.seconds, ridge=_core.WHITENING_RIDGE,
                                feature_transform=None if feature_transform is None or isinstance(
                                    feature_transform, Model) else os.fspath(feature_transform)))
    return result, report


def _output_dialect(dialect: Optional[str], binary: Optional[bool], src_binary: bool,
                    src_dialect: str) -> str:
    """The dialect write() uses for these arguments and this source."""
    if dialect is not None:
        return dialect
    return "kaldi" if (src_binary if binary is None else binary) else src_dialect


def _written_params(comp: Component, dialect: str) -> int:
    """Parameters of a copied component once written in ``dialect``.

    The writer converts between dialects (PDNN's ``<relu>`` becomes Kaldi's
    ``<ParametricRelu>`` with alpha and beta vectors, a plain one becomes
    ``<relu>``; Kaldi drops ``<linear>``), so the small components are counted
    by writing them; weight matrices and raw kinds are written as they are.
    """
    n = comp.num_params or 0
    if not comp.modelled or comp.kind in ("AffineTransform", "LinearTransform"):
        return n
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write([comp], buf, binary=False, dialect=dialect)
    buf.seek(0)
    return sum(c.num_params or 0 for c in iter_components(buf))


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


def _finite_weight(comp: Component, plan: LayerPlan) -> np.ndarray:
    W = comp.weight
    assert W is not None  # plans name AffineTransforms only
    if not np.isfinite(W).all():
        raise _core.Error(f"component {plan.index} {plan.marker}: the weight matrix has nan/inf entries")
    return W


def _compress_one(comp: Component, plan: LayerPlan, policy: str, value, min_gain: float,
                  round_to: int, split: str, dialect: str, method: str,
                  n_oversamples: Optional[int], n_iter: Optional[int],
                  seed: int, sv: Optional[np.ndarray] = None,
                  t0: Optional[float] = None,
                  white: Optional["_Whitened"] = None) -> Tuple[LayerReport, List[Component]]:
    t0 = time.perf_counter() if t0 is None else t0
    W0 = _finite_weight(comp, plan)
    # Calibrated: every policy works on W R^T, whose spectrum is the output energy.
    W = W0 if white is None else white.M
    out_dim, in_dim = W.shape
    before = comp.num_params or 0
    total_energy = float(_core.frobenius_sq(W)) if white is None else white.energy
    p, q = _svd_options(n_oversamples, n_iter)
    factors: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None
    used_method = method
    if policy == "energy" and method == "exact":
        # The smallest k, from the exact spectrum; one decomposition gives k and the factors.
        U, s, Vt, *_ = _core.truncated_svd(W, min(out_dim, in_dim), "exact", p, q, seed)
        k = max(1, int(_core.energy_rank(s.tolist(), float(value), total_energy)))
        factors = (U[:, :k], s[:k], Vt[:k])
    elif policy == "energy":
        # An adaptive sketch grown until the energy it keeps (exact for its
        # factors) reaches E: no full spectrum, so large layers of low rank cost
        # a fraction of an exact decomposition. A sketch's singular values never
        # exceed the true ones, so k is never below the smallest rank (README).
        U, s, Vt, *_ = _core.adaptive_energy_svd(W, float(value), p, q, seed)
        k = max(1, len(s))
        factors = (U, s, Vt)
        used_method = "adaptive"
    elif policy == "nuclear":
        assert sv is not None  # compress() passes the spectrum for this policy
        k = int(_core.nuclear_rank(sv.tolist(), float(value)))
    else:
        assert plan.rank is not None  # set by the fixed policies and the budget's pass
        k = int(plan.rank)  # fixed policies and the budget's pass
    k_rounded = _round(max(k, 1), round_to, plan)
    if k_rounded != k:
        factors = None  # more than the decomposition kept: recompute at the rounded rank
    k = k_rounded
    if plan.rank == -1 or not _worth(k, out_dim, in_dim, min_gain, dialect):
        return LayerReport(index=plan.index, marker=plan.marker, out=out_dim, inp=in_dim, rank=None,
                           params_before=before, params_after=before, retained_energy=1.0,
                           rel_error=0.0, seconds=time.perf_counter() - t0, method="-",
                           note="unchanged: factoring would not reduce parameters"
                           + (f" by {min_gain:.0%}" if min_gain > 0 else "")), [comp]
    if factors is None:
        used_method = _choose_method(method, k, out_dim, in_dim, n_oversamples)
        factors = _core.truncated_svd(W, k, used_method, p, q, seed)[:3]
    s = factors[1]
    # The factors are an orthogonal projection of W (W R^T calibrated), so this is their exact energy.
    kept = float(np.sum(np.square(s, dtype=np.float64)))
    retained = kept / total_energy if total_energy > 0 else 1.0
    out_err = out_err_plain = None
    if white is None:
        new = factor_layer(comp, k, split=split, dialect=dialect, factors=factors)
        rel_error = float(np.sqrt(max(0.0, 1.0 - retained)))
    else:
        new = white.factor(comp, k, factors, split, dialect)
        first, second = new[0].weight, new[-1].weight
        assert first is not None and second is not None
        rel_error = float(np.sqrt(_core.frobenius_sq(W0 - second @ first) / max(_core.frobenius_sq(W0), 1e-300)))
        Up, sp, Vtp, *_ = _core.truncated_svd(W0, k, _choose_method(method, k, out_dim, in_dim, n_oversamples),
                                              p, q, seed)
        out_err, out_err_plain = _cal.output_errors(W0, second, first, white.stats, (Up * sp[None, :], Vtp),
                                                    white.total)
    after = sum(c.num_params or 0 for c in new)
    return LayerReport(index=plan.index, marker=plan.marker, out=out_dim, inp=in_dim, rank=k,
                       params_before=before, params_after=after, retained_energy=min(retained, 1.0),
                       rel_error=rel_error, seconds=time.perf_counter() - t0, method=used_method,
                       output_error=out_err, output_error_plain=out_err_plain), new


class _Whitened:
    """A layer's weight in the whitened space of its calibration inputs (calibration.py)."""

    def __init__(self, W: np.ndarray, stats: _cal.LayerStats) -> None:
        self.stats = stats
        self.wh = stats.whitening()
        self.M, self.energy = _core.whiten_weight(W, self.wh)
        # E||W (x - mean)||^2 without the ridge: the output's variation, the errors' scale.
        self.total = max(float(self.energy) - self.wh.ridge * float(_core.frobenius_sq(W)), 0.0)

    def factor(self, comp: Component, k: int, factors, split: str, dialect: str) -> List[Component]:
        """The components for the top-k SVD factors (U, s, V^T) of M: V^T mapped back to W's
        inputs, the bias absorbing the mean of what is cut."""
        U, s, Vt = factors
        new = factor_layer(comp, k, split=split, dialect=dialect, factors=(U, s, _core.unwhiten_rows(Vt, self.wh)))
        first, second = new[0].weight, new[-1].weight
        assert first is not None and second is not None
        new[-1].bias = _cal.absorbed_bias(comp, second, first, self.stats.mean)
        return new


#: How calibrated layers are put on one scale under param_budget: "measured" (the
#: model's output loss with the layer alone truncated, measured at a few ranks),
#: "relative" (each layer's relative output error weighs alike) or "absolute" (raw
#: output energies). benchmarks/bench_calibration.py measures all three; the README
#: says why the first.
_BUDGET_RULE = "measured"


def _plan_budget(model, plans: List[LayerPlan], fraction: float, min_gain: float, round_to: int,
                 binary: Optional[bool], dialect: Optional[str], cal: Optional[_cal.Calibration] = None,
                 split: str = "sqrt", method: str = "auto", n_oversamples: Optional[int] = None,
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
                white = _Whitened(W, cal.layers[idx])
                spectra[idx] = _core.singular_values(white.M)
                totals[idx] = white.total
        else:
            written.append(_written_params(comp, out_dialect))
    # Fixed: unselected components and the selected layers' biases, which every
    # option keeps; the greedy shares out the rest among the weights.
    fixed = sum(written) + sum(p.out for p in plans)
    limit = fraction * params_in
    budget = limit - fixed
    per_rank = _PER_RANK[out_dialect]
    k0 = max(1, round_to)

    def cheapest(p: LayerPlan) -> int:  # a layer min_gain forbids factoring stays whole
        k = min(k0, p.out, p.inp)
        if _worth(k, p.out, p.inp, min_gain, out_dialect):
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
            curves = _budget_curves(model, plans, first, cal, split, out_dialect, method, n_oversamples,
                                    n_iter, seed)
            ranks = [int(k) for k in _core.budget_ranks(
                [(p.out, p.inp, curves[p.index].tolist()) for p in plans],
                float(budget), float(min_gain), int(k0), per_rank)]
    for p, k in zip(plans, ranks):
        p.rank = k


def _budget_curves(model: Model, plans: List[LayerPlan], ranks: List[int], cal: _cal.Calibration,
                   split: str, dialect: str, method: str, n_oversamples: Optional[int],
                   n_iter: Optional[int], seed: int) -> Dict[int, np.ndarray]:
    """Per layer, a pseudo-spectrum whose tail sums are the measured output loss of that
    layer alone truncated at rank k (linear between ranks 1 and 1/4x .. 4x the
    equal-relative-error rank, monotone; 0 at full rank)."""
    p_, q_ = _svd_options(n_oversamples, n_iter)
    grids = {}
    keyed = {}
    for p, k in zip(plans, ranks):
        comp = model.components[p.index - 1]
        W = _finite_weight(comp, p)
        full = min(p.out, p.inp)
        if k <= 0:
            k = max(1, (p.out * p.inp - 1) // (p.out + p.inp + _PER_RANK[dialect]) // 2)
        grid = sorted({1} | {min(full, max(1, int(round(k * f)))) for f in (0.25, 0.5, 1, 2, 4)})
        grid = [g for g in grid if g < full]
        grids[p.index] = grid
        white = _Whitened(W, cal.layers[p.index])
        kmax = max(grid) if grid else 1
        U, s, Vt = _core.truncated_svd(white.M, kmax, _choose_method(method, kmax, p.out, p.inp, n_oversamples),
                                       p_, q_, seed)[:3]
        for g in grid:
            new = white.factor(comp, g, (U[:, :g], s[:g], Vt[:g]), split, dialect)
            keyed[(p.index, g)] = new
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
