"""Inference exactly as Kaldi's ``nnet-forward`` computes it, and feature archives.

The network runs in the C++ core (OpenBLAS GEMMs, threaded elementwise kernels,
GIL released). Archives are read and written by :mod:`svdistill.archive`
(``ark:``, ``scp:``, ``ark,t:``, ``ark,scp:``, pipes, ``-``).
"""
from __future__ import annotations

import contextlib
import numbers
import os
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core
from .archive import TableWriter, check_finite, parse_rspecifier, read_table
from .errors import Error, option_error
from .io import PathOrFile, read
from .model import Model

if TYPE_CHECKING:
    from .specialists import Ensemble

ModelLike = Union[Model, PathOrFile]
#: An ensemble.json (its path) or the :class:`~svdistill.specialists.Ensemble` loaded from one.
EnsembleLike = Union[str, "os.PathLike[str]", "Ensemble"]


def _load(model: ModelLike) -> Model:
    return model if isinstance(model, Model) else read(model)


def read_class_frame_counts(path: Union[str, "os.PathLike[str]"]) -> np.ndarray:
    """A Kaldi counts vector (``[ c1 c2 ... ]`` text, as ``ali-to-pdf | analyze-counts`` writes)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError as e:
        raise Error(f"{path}: cannot read class frame counts: {e.strerror}") from None
    body = text.strip()
    if body.startswith("["):
        body = body[1:]
    if body.endswith("]"):
        body = body[:-1]
    try:
        counts = np.array([float(x) for x in body.split()], dtype=np.float64)
    except ValueError:
        raise Error(f"{path}: expected a vector of counts '[ c1 c2 ... ]'") from None
    return _checked_counts(counts, path)


def _checked_counts(counts: np.ndarray, where: Union[str, "os.PathLike[str]"]) -> np.ndarray:
    """Counts as Kaldi's PdfPrior needs them: a finite, non-negative vector with a positive sum."""
    if counts.ndim != 1 or counts.size == 0 or not np.all(np.isfinite(counts)) or counts.min() < 0 \
            or counts.sum() <= 0:
        raise Error(f"{where}: class frame counts must be a non-empty vector of finite, non-negative "
                    f"numbers with a positive sum")
    return counts


def _check_output_options(apply_log, no_softmax, prior_scale, class_frame_counts=None) -> None:
    """nnet-forward's output options, checked once for forward, forward_archive and export."""
    for name, v in (("apply_log", apply_log), ("no_softmax", no_softmax)):
        if not isinstance(v, (bool, np.bool_)):
            raise option_error(name, f"must be True or False, got {v!r}")
    if apply_log and no_softmax:
        raise option_error("apply_log", "and {no_softmax} cannot both be set (nnet-forward refuses it too)",
                           others=["no_softmax"])
    if isinstance(prior_scale, bool) or not isinstance(prior_scale, numbers.Real) \
            or not np.isfinite(prior_scale):
        raise option_error("prior_scale", f"must be a finite number, got {prior_scale!r}")
    if prior_scale != 1.0 and class_frame_counts is None:  # it would scale nothing
        raise option_error("prior_scale", "scales the log priors of {class_frame_counts}, and none were given",
                           others=["class_frame_counts"])


def log_priors(counts: np.ndarray, prior_floor: float = 1e-10) -> np.ndarray:
    """log(counts / sum) as Kaldi's PdfPrior: classes below ``prior_floor`` get sqrt(FLT_MAX)."""
    rel = counts / counts.sum()
    lp = np.log(rel + 1e-20)
    lp[rel < prior_floor] = np.sqrt(np.finfo(np.float32).max)
    return lp.astype(np.float32)


class Network:
    """A model kept in the core for repeated forward passes.

    Parameters
    ----------
    model : Model or path
    feature_transform : Model or path, optional
        Run first, frozen (Kaldi's ``--feature-transform``).
    no_softmax : bool
        Drop a final ``<Softmax>``/``<BlockSoftmax>`` (pre-softmax outputs), as
        nnet-forward does; any other last component stays, with a warning.

    Calling it on a (frames x dims) array of one utterance returns the outputs.
    """

    def __init__(self, model: ModelLike, *, feature_transform: Optional[ModelLike] = None,
                 no_softmax: bool = False) -> None:
        self.model = _load(model)
        comps = list(self.model.components)
        if no_softmax:
            if comps and comps[-1].kind in ("Softmax", "BlockSoftmax"):
                comps = comps[:-1]
            elif comps:
                warnings.warn(f"--no-softmax: the last component is {comps[-1].marker}, not a "
                              "softmax; it is kept", stacklevel=2)
        self.feature_transform = _load(feature_transform) if feature_transform is not None else None
        ft = list(self.feature_transform.components) if self.feature_transform is not None else []
        if ft and comps and ft[-1].output_dim != comps[0].input_dim:
            raise Error(f"the feature transform outputs {ft[-1].output_dim} dims but the model "
                        f"expects {comps[0].input_dim}")
        self._net = _core.Network([c._c for c in ft + comps], len(ft))

    @property
    def input_dim(self) -> int:
        return self._net.input_dim

    @property
    def output_dim(self) -> int:
        return self._net.output_dim

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        if isinstance(feats, (str, bytes, os.PathLike, Mapping)):
            raise Error(f"features: expected one utterance as a 2-D (frames x dims) array, got a "
                        f"{type(feats).__name__}; call it once per utterance, or use "
                        f"svdistill.forward.forward_archive for an archive (the CLI's 'svdistill forward')")
        try:
            feats = np.asarray(feats, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise Error(f"features: expected a 2-D (frames x dims) array of numbers: {e}") from None
        if feats.ndim != 2:
            raise Error(f"features must be a 2-D (frames x dims) array, got shape {feats.shape}")
        return self._net.forward(feats)


def forward(model: Union[ModelLike, Network], feats: np.ndarray, *,
            feature_transform: Optional[ModelLike] = None, no_softmax: bool = False,
            apply_log: bool = False, class_frame_counts: Optional[Union[str, np.ndarray]] = None,
            prior_scale: float = 1.0) -> np.ndarray:
    """Outputs of ``model`` on the frames of one utterance, as ``nnet-forward`` computes them.

    Parameters
    ----------
    model : Model, path, or a :class:`Network` (to avoid converting weights again)
    feats : ndarray (frames x dims)
    feature_transform, no_softmax
        As :class:`Network`.
    apply_log : bool
        log(posterior + 1e-20). Cannot be combined with ``no_softmax``.
    class_frame_counts, prior_scale
        Subtract ``prior_scale`` x log prior (counts file or array) from the
        output: pseudo log-likelihoods for decoding.

    Returns
    -------
    ndarray (frames x output_dim), float32
    """
    _check_output_options(apply_log, no_softmax, prior_scale, class_frame_counts)
    net = model if isinstance(model, Network) else Network(model, feature_transform=feature_transform,
                                                             no_softmax=no_softmax)
    out = net(feats)
    return _postprocess(out, apply_log, _priors(class_frame_counts, prior_scale, out.shape[1]))


def _priors(class_frame_counts, prior_scale: float, dim: int) -> Optional[np.ndarray]:
    if class_frame_counts is None:
        return None
    if isinstance(class_frame_counts, (str, os.PathLike)):
        counts = read_class_frame_counts(class_frame_counts)
    else:
        try:
            counts = np.asarray(class_frame_counts, dtype=np.float64)
        except (TypeError, ValueError):
            raise option_error("class_frame_counts", "expected a counts file or a vector of counts, got "
                               f"{type(class_frame_counts).__name__}") from None
        counts = _checked_counts(counts, "class_frame_counts")
    if counts.size != dim:
        raise Error(f"class frame counts have {counts.size} entries but the network outputs {dim}")
    return (prior_scale * log_priors(counts)).astype(np.float32)


def _postprocess(out: np.ndarray, apply_log: bool, scaled_log_priors: Optional[np.ndarray]) -> np.ndarray:
    if apply_log:
        out = np.log(out + np.float32(1e-20))
    if scaled_log_priors is not None:
        out = out - scaled_log_priors[None, :]
    return out


def iter_archive(rspecifier: str) -> Iterator[Tuple[str, np.ndarray]]:
    """(key, frames x dims float32 matrix) from a Kaldi rspecifier (see :mod:`svdistill.archive`):
    any fault is one :class:`Error` naming the archive, the utterance and the byte; features
    with NaN or inf are an error."""
    return read_table(rspecifier)


class _EnsembleRunner:
    """An ensemble (ensemble.json) run as forward runs a network: its combined posteriors
    (section 5.3 of Hinton et al. 2015) per utterance, counting the frames whose combination
    did not converge."""

    def __init__(self, ensemble: "Ensemble") -> None:
        self.ensemble = ensemble
        self.input_dim = ensemble.input_dim
        self.output_dim = ensemble.num_classes
        self.unconverged = 0
        self.frames = 0

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        q, info = self.ensemble(feats, return_info=True)
        self.unconverged += int(info["unconverged"])
        self.frames += len(q)
        return q

    def logits(self, x: np.ndarray, raw: bool = False) -> np.ndarray:
        """The ensemble's logits (:meth:`~svdistill.specialists.Ensemble.logits`), counted."""
        lq, info = self.ensemble.logits(x, raw=raw, return_info=True)
        self.unconverged += int(info["unconverged"])
        self.frames += len(lq)
        return lq

    def warn_unconverged(self) -> None:
        if self.unconverged:
            warnings.warn(f"the combination of {self.unconverged} of {self.frames} frames stopped at "
                          f"max_iterations ({self.ensemble.max_iterations}) before reaching tolerance "
                          f"({self.ensemble.tolerance:g})", stacklevel=3)


def _ensemble_runner(model: Any, ensemble: Optional[EnsembleLike], top_n: Optional[int], tolerance: Optional[float],
                     max_iterations: Optional[int], model_name: str, ensemble_name: str,
                     model_required: bool = True) -> Optional[_EnsembleRunner]:
    """The ensemble to run instead of ``model`` (one of them given; neither, when not
    ``model_required``), or None without one; ``top_n``, ``tolerance`` and ``max_iterations``
    (the combination's options, checked here) only with an ensemble. Forward, compare and
    distill take an ensemble through here."""
    if ensemble is None:
        if model is None and model_required:
            raise option_error(model_name, f"is missing: give a model, or {{{ensemble_name}}}",
                               others=[ensemble_name])
        for name, v in (("top_n", top_n), ("tolerance", tolerance), ("max_iterations", max_iterations)):
            if v is not None:
                raise option_error(name, f"applies to the combination of {{{ensemble_name}}}, and none was given",
                                   others=[ensemble_name])
        return None
    if model is not None:
        raise option_error(ensemble_name, f"names the models to run in place of {{{model_name}}}: give one of "
                                          "them, not both", others=[model_name])
    from .specialists import as_ensemble  # (specialists imports this module)
    return _EnsembleRunner(as_ensemble(ensemble, ensemble_name, top_n, tolerance, max_iterations))


def forward_archive(model: Optional[ModelLike], feats_rspecifier: str, out_wspecifier: str, *,
                    feature_transform: Optional[ModelLike] = None, no_softmax: bool = False,
                    apply_log: bool = False, class_frame_counts: Optional[str] = None,
                    prior_scale: float = 1.0, ensemble: Optional[EnsembleLike] = None, top_n: Optional[int] = None,
                    tolerance: Optional[float] = None, max_iterations: Optional[int] = None,
                    progress=None) -> Tuple[int, int]:
    """``nnet-forward`` over an archive, utterance by utterance. Returns (utterances, frames).

    As nnet-forward: features or outputs with NaN/inf, and an input without any
    utterance, are errors. A file output appears only when complete (nothing is
    left on any error or interruption) and may be the input archive itself.

    ``ensemble`` (the path of an ``ensemble.json`` that
    :func:`svdistill.specialists.specialists` wrote, or a loaded
    :class:`~svdistill.specialists.Ensemble`) runs in place of ``model`` (then None): the
    output is its combined posteriors q (section 5.3 of Hinton et al. 2015), through
    ``apply_log`` and the priors as a model's posteriors. The ensemble runs the feature
    transform its file names (a ``feature_transform`` given must be that one), and
    ``no_softmax`` is refused (the combination gives posteriors, not logits). ``top_n`` (the generalist's classes that
    select the specialists of a frame; default the ensemble's, which for a path is
    :data:`svdistill.specialists.DEFAULT_TOP_N`), ``tolerance`` and ``max_iterations``
    (defaults :data:`~svdistill.specialists.DEFAULT_TOLERANCE` and
    :data:`~svdistill.specialists.DEFAULT_MAX_ITERATIONS`) are
    :func:`svdistill.specialists.combine`'s; frames whose combination stops at
    ``max_iterations`` are counted in a warning.
    """
    _check_output_options(apply_log, no_softmax, prior_scale, class_frame_counts)
    parse_rspecifier(feats_rspecifier)
    if ensemble is not None and no_softmax:
        raise option_error("no_softmax", "gives a model's logits; the combination of {ensemble} gives "
                                         "posteriors only", others=["ensemble"])
    combined = _ensemble_runner(model, ensemble, top_n, tolerance, max_iterations, "model", "ensemble")
    if combined is not None and feature_transform is not None:
        # The ensemble runs the one its file names; a given one can only be that one.
        combined.ensemble.feature_transform_for(_load(feature_transform), "ensemble")
    net: Union[Network, _EnsembleRunner] = combined if combined is not None else \
        Network(model, feature_transform=feature_transform, no_softmax=no_softmax)  # type: ignore[arg-type]
    who = "the ensemble" if combined is not None else "the model"
    priors = _priors(class_frame_counts, prior_scale, net.output_dim)
    n_utt = n_frames = 0
    with TableWriter(out_wspecifier, inputs=[feats_rspecifier]) as writer:
        with contextlib.closing(read_table(feats_rspecifier)) as table:
            for key, mat in table:
                if mat.shape[1] != net.input_dim:
                    raise Error(f"{feats_rspecifier}: utterance {key}: features have {mat.shape[1]} dims, the "
                                f"network expects {net.input_dim}")
                out = _postprocess(net(mat), apply_log, priors)
                check_finite(out, f"{feats_rspecifier}: utterance {key}", "network output",
                             f"its features are finite: {who} itself produces NaN or inf "
                             "(nnet-forward stops here too)")
                writer.write(key, out)
                n_utt += 1
                n_frames += mat.shape[0]
                if progress:
                    progress(n_utt, n_frames)
        if n_utt == 0:
            raise Error(f"{feats_rspecifier}: no utterances (an empty archive or scp): nothing to forward, "
                        f"{out_wspecifier} not written")
    if combined is not None:
        combined.warn_unconverged()
    return n_utt, n_frames
