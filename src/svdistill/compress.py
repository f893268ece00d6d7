"""Truncated-SVD restructuring of nnet1 models (Xue, Li & Gong, Interspeech 2013).

Each selected ``<AffineTransform>`` W (out x in) with bias b becomes a rank-k
pair: a k x in ``<LinearTransform>`` followed by an out x k ``<AffineTransform>``
that keeps b and the learn-rate coefficients. Everything else is copied as is.

The core decides everything about one layer (``_core.compress_layer``: rank,
rounding, gain, SVD method, split, dialect, whitening, statistics); this module
checks options, selects layers and streams the model past it. A file compressed
to a file is one call of the core (``_core.compress_stream``), which reads the
next component and writes the previous one while it factors the current one
(memory: about three components). The ``param_budget`` policy makes a first pass
for the spectra.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from . import _core
from . import calibration as _cal
from .budget import _plan_budget
from .errors import NOT_GIVEN, RankError, option_error, renamed
from .factoring import (
    _CONVERTED_KINDS,
    _SPLITS,
    _factor_struct,
    _output_dialect,
    _rank_policy,
    _svd_struct,
    _written_params,
    factor_layer,
    factored_params,
)
from .io import ComponentStream, ConversionWarning, PathOrFile, _is_gzip, check_write_options, iter_components, write
from .linalg import _fraction_option, _int_option, _method_option, _seed, _svd_options
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


def _check_rank(plan: LayerPlan, policy: str, value, position: int) -> int:
    """A fixed policy's rank for this layer, checked against its shape (the core rounds it)."""
    lim = min(plan.out, plan.inp)
    k = int(value) if policy == "rank" else int(list(value)[position])
    if k > lim:
        raise option_error(policy, f"{'value ' if policy == 'ranks' else ''}{k} exceeds min(out, in) = "
                                   f"{lim} of component {plan.index} {plan.marker} ({plan.out}x{plan.inp})",
                           RankError)
    return k


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
             method: str = "auto", oversamples: Optional[int] = None, n_iter: Optional[int] = None,
             seed=0, output: Optional[PathOrFile] = None, binary: Optional[bool] = None,
             dialect: Optional[str] = None, digits: str = "shortest",
             progress: Optional[bool] = None,
             spectra: bool = False, calibration=None, feature_transform=None,
             calibration_frames: int = _cal.DEFAULT_FRAMES,
             refine: bool = False, n_oversamples: Any = NOT_GIVEN,
             random_state: Any = NOT_GIVEN) -> Tuple[Optional[Model], CompressReport]:
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
    method, oversamples, n_iter, seed
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
    n_oversamples, random_state
        The old names of ``oversamples`` and ``seed`` (deprecated).

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
        settings method, oversamples, n_iter and seed raise
        :class:`svdistill.Error`, as in :func:`svdistill.linalg.truncated_svd`).
    """
    if n_oversamples is not NOT_GIVEN:
        oversamples = renamed("compress", "n_oversamples", "oversamples", n_oversamples, oversamples, None)
    if random_state is not NOT_GIVEN:
        seed = renamed("compress", "random_state", "seed", random_state, seed, 0)
    policy, value = _check_policy(dict(rank=rank, ranks=ranks, rank_fraction=rank_fraction,
                                       energy=energy, nuclear=nuclear, param_budget=param_budget))
    if split not in ("sqrt", "left", "right"):
        raise option_error("split", f"must be sqrt, left or right, got {split!r}", RankError)
    min_gain = _fraction_option("min_gain", min_gain, RankError, low_open=False)
    round_to = _int_option("round_to", round_to, 1, cls=RankError)
    if dialect not in (None, "kaldi", "pdnn"):
        raise option_error("dialect", f"must be 'kaldi' or 'pdnn', got {dialect!r}", RankError)
    _svd_options(oversamples, n_iter)
    _method_option(method)
    for name, v in (("oversamples", oversamples), ("n_iter", n_iter)):
        if v is not None and method == "exact":  # it would be ignored
            raise option_error(name, f"{v} applies to the randomized SVD, and {{method}} is exact", others=["method"])
    if not isinstance(refine, (bool, np.bool_)):
        raise option_error("refine", f"must be True or False, got {refine!r}")
    calibration_frames = _cal.check_options(calibration, feature_transform, calibration_frames, refine=refine)
    if calibration is not None:
        from .distill.data import _is_stdin  # (distill imports this module)
        if refine and isinstance(calibration, str) and _is_stdin(calibration):
            raise option_error("refine", "reads the {calibration} features again for each layer, and stdin "
                                         "cannot be read twice: give a file, an scp or 'ark:COMMAND |'",
                               others=["calibration"])
    t_start = time.perf_counter()
    seed = _seed(seed)

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
        if policy in ("rank", "ranks"):
            p.rank = _check_rank(p, policy, value, pos)

    cal: Optional[_cal.Calibration] = None
    if calibration is not None:
        assert isinstance(model, Model)
        with Progress("calibration", unit="frames", enabled=progress) as bar:
            cal = _cal.collect(model, calibration, [p.index for p in plans], feature_transform=feature_transform,
                               frames=calibration_frames, progress=bar.update)

    if policy == "param_budget":
        _plan_budget(model, plans, float(value), min_gain, round_to, binary, dialect,  # type: ignore[arg-type]
                     cal, split, method, oversamples, n_iter, seed)

    by_index = {p.index: p for p in plans}
    svd_opts = _svd_struct(method, oversamples, n_iter, seed)
    factor_opts: Dict[str, "_core.FactorOptions"] = {}  # by output dialect
    fixed = policy in ("rank", "ranks", "param_budget")
    rank_rule = _rank_policy(policy, value, min_gain, round_to)
    total = len(plans)
    options = dict(min_gain=min_gain, round_to=round_to, split=split, method=method, layers=layers,
                   skip_output_layer=skip_output_layer, seed=seed)
    policy_record = {policy: value if policy != "ranks" else list(value)}  # type: ignore[call-overload]
    if (output is not None and cal is None and not in_memory and isinstance(output, (str, os.PathLike))
            and not any(e.kind in _CONVERTED_KINDS for e in structure)
            and (_core.have_zlib or not _is_gzip(os.fspath(cast("os.PathLike[str]", model))))):
        # The whole pass in the core: reading and writing overlap the SVDs.
        check_write_options(binary, dialect, digits)
        policies = {p.index: _rank_policy(policy, value, min_gain, round_to, p.rank) if fixed else rank_rule
                    for p in plans}
        streamed, before, after, sv = _compress_streamed(
            os.fspath(cast("os.PathLike[str]", model)), os.fspath(output), plans, policies, svd_opts, split,
            spectra, binary, dialect, digits, progress)
        return None, CompressReport(layers=streamed, params_before=before, params_after=after, policy=policy_record,
                                    seconds=time.perf_counter() - t_start, options=options,
                                    spectra=sv)
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
            if out_dialect not in factor_opts:
                factor_opts[out_dialect] = _factor_struct(split, out_dialect, spectra)
            if fixed:
                assert plan.rank is not None  # set by the fixed policies and the budget's pass
                rank_rule.rank = plan.rank
            inputs = cal.layers[idx].inputs() if cal is not None else None
            try:
                core_new, stats = _core.compress_layer(comp._c, rank_rule, svd_opts, factor_opts[out_dialect],
                                                       inputs)
            except _core.Error as e:
                raise _core.Error(f"component {idx} {comp.marker}: {e}") from None
            if spectra:
                all_spectra[idx] = list(stats.spectrum)
            rep = _layer_report(plan, stats)
            new = [comp] if rep.rank is None else [Component(c) for c in core_new]
            reports.append(rep)
            params_after += stats.params_after
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
                            policy=policy_record,
                            seconds=time.perf_counter() - t_start, options=options,
                            spectra=all_spectra,
                            calibration=None if cal is None else dict(
                                source=cal.source, frames=cal.frames, utterances=cal.utterances,
                                seconds=cal.seconds, ridge=_core.WHITENING_RIDGE,
                                feature_transform=None if feature_transform is None or isinstance(
                                    feature_transform, Model) else os.fspath(feature_transform)))
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


def _compress_streamed(source: str, output: str, plans: List[LayerPlan], policies: Dict[int, "_core.RankPolicy"],
                       svd_opts: "_core.SvdOptions", split: str, spectra: bool, binary: Optional[bool],
                       dialect: Optional[str], digits: str, progress: Optional[bool]
                       ) -> Tuple[List[LayerReport], int, int, Dict[int, List[float]]]:
    """compress() of a file to a file in one call of the core: (layer reports, parameters
    before and after, spectra)."""
    by_index = {p.index: p for p in plans}
    position = {p.index: i for i, p in enumerate(plans)}
    with Progress("compress", total=len(plans), unit="layers", enabled=progress) as bar:
        streamed, before, after, notes, _, _ = _core.compress_stream(
            source, output, policies, svd_opts, _SPLITS[split], bool(spectra), binary, dialect, digits,
            lambda idx, o, i: bar.update(position[idx], f"component {idx} {o}x{i}"))
    for note in notes:
        warnings.warn(note, ConversionWarning, stacklevel=3)
    reports = [_layer_report(by_index[idx], st) for idx, _, st in streamed]
    return reports, before, after, {idx: list(st.spectrum) for idx, _, st in streamed} if spectra else {}


def _layer_report(plan: LayerPlan, st: "_core.LayerStats") -> LayerReport:
    return LayerReport(index=plan.index, marker=plan.marker, out=st.out, inp=st.inp, rank=st.rank,
                       params_before=st.params_before, params_after=st.params_after,
                       retained_energy=st.retained_energy, rel_error=st.rel_error, seconds=st.seconds,
                       method=st.method, note=st.note, output_error=st.output_error,
                       output_error_plain=st.output_error_plain)


