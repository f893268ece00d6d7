"""Specialist ensembles (Hinton, Vinyals & Dean 2015, section 5).

A *generalist* (any nnet1 model ending in ``<AffineTransform>`` + ``<Softmax>``) is
joined by *specialists*, each trained on a subset of the classes that the generalist
confuses with each other, plus one *dustbin* class standing for all the others:

- :func:`specialists` clusters the classes (section 5.2: K-means on the columns of
  the covariance matrix of the generalist's predictions over the data), and trains
  one specialist per cluster with :func:`svdistill.distill`, on data in which half
  the frames come from its classes, against the generalist's soft targets over its
  classes and the dustbin. It writes the models and ``ensemble.json``.
- :func:`combine` (section 5.3, in the C++ core) finds, per frame, the distribution q
  minimising KL(p_g || q) + sum over the active specialists of KL(p_m || q_m), q_m
  being q on the specialist's classes and 1 - their sum on its dustbin; a specialist
  is active when its classes include one of the generalist's ``top_n`` classes.
- :class:`Ensemble` loads ``ensemble.json`` and runs the combination over the frames
  of one utterance.

The teacher of specialist m is exact: the generalist's logits of m's classes and,
for the dustbin, the log-sum-exp of the other classes' logits (:func:`dustbin_teacher`,
given to :func:`svdistill.distill` as a logits teacher), so its posteriors are the
generalist's regrouped (m's classes, then the sum of the others); at a temperature T
the soft targets are those posteriors tempered as a whole (the dustbin's logit divided by
T like the others), not the sum of the others' tempered probabilities. No nnet1 layer
computes a log-sum-exp, so the specialist *model* cannot start as that teacher: it
starts as the generalist (or ``init``) with its final affine's rows for m's classes
and one dustbin row fitted by least squares (over m's training frames) to that
log-sum-exp as an affine function of the final affine's input
(:func:`dustbin_model`); the fit's RMS error (in nats of logit), which training
then reduces, is recorded as ``init_dustbin_rms`` in ``ensemble.json``.
"""
from __future__ import annotations

import copy
import itertools
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .distill import DistillReport, check_options, distill
from .distill.data import FeatsLike, LabelsLike, Source, load_labels
from .distill.engine import LogitsTeacher
from .errors import Error, option_error
from .forward import ModelLike, Network, _load
from .io import atomic_output
from .model import Component, Model, same_model
from .progress import Progress

__all__ = ["DEFAULT_TOP_N", "Ensemble", "SpecialistsResult", "cluster_classes", "combine", "dustbin_model",
           "dustbin_teacher", "specialist_file", "specialists"]

#: Generalist classes that select the active specialists of a frame (examples/README.md
#: measures 1 to 3 on the digits).
DEFAULT_TOP_N = 1
#: The combination stops when the estimated distance of q to the minimiser (largest entry) is
#: below this (cpp/nn/ensemble.h) ...
DEFAULT_TOLERANCE = 1e-6
#: ... or after this many iterations (a frame that does is counted as unconverged).
DEFAULT_MAX_ITERATIONS = 1000
FORMAT = "svdistill-ensemble"
VERSION = 1
_CHUNK = 64  # frames per pseudo-utterance of a specialist's training data
_FIT_BLOCK = 8192  # frames per block of the initial dustbin row's moments


# -- clustering (section 5.2) ------------------------------------------------------

def _sqdist(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared distances (points x centres), without a points x centres x dims temporary
    (C x K x C would not fit for thousands of classes)."""
    d2 = (points ** 2).sum(1)[:, None] - 2.0 * points @ centres.T + (centres ** 2).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, restarts: int,
            iterations: int = 300) -> Tuple[np.ndarray, np.ndarray]:
    """Lloyd's K-means with k-means++ seeding, the best (least inertia) of ``restarts``:
    (assignment per point, centroids)."""
    n = len(points)
    best: Optional[Tuple[float, np.ndarray, np.ndarray]] = None
    for _ in range(restarts):
        cent = [points[rng.integers(n)]]
        d2 = _sqdist(points, cent[0][None])[:, 0]  # to the nearest centroid so far
        for _ in range(1, k):
            total = d2.sum()
            cent.append(points[rng.choice(n, p=d2 / total)] if total > 0 else points[rng.integers(n)])
            d2 = np.minimum(d2, _sqdist(points, cent[-1][None])[:, 0])
        c = np.asarray(cent, dtype=np.float64)
        assign = np.full(n, -1)
        for _ in range(iterations):
            d2 = _sqdist(points, c)
            new = d2.argmin(1)
            counts = np.bincount(new, minlength=k)
            for j in np.flatnonzero(counts == 0):
                # An empty cluster takes the point farthest from its centroid among the
                # clusters that keep a point without it (k <= n: there is always one).
                dist = d2[np.arange(n), new].copy()
                dist[counts[new] <= 1] = -1.0
                far = int(dist.argmax())
                counts[new[far]] -= 1
                new[far] = j
                counts[j] = 1
                d2[far] = 0.0
            if (new == assign).all():
                break
            assign = new
            onehot = np.zeros((k, n))
            onehot[assign, np.arange(n)] = 1.0
            c = (onehot @ points) / onehot.sum(1)[:, None]  # every cluster has a point (above)
        inertia = float(((points - c[assign]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, assign.copy(), c.copy())
    assert best is not None
    return best[1], best[2]


def cluster_classes(covariance: np.ndarray, num_specialists: int, *,
                    classes_per_specialist: Optional[int] = None, overlap: int = 0, seed: int = 777,
                    restarts: int = 10) -> List[List[int]]:
    """The classes of each specialist: K-means on the columns of ``covariance`` (C x C,
    the covariance of the generalist's predictions), classes that are predicted
    together falling into one cluster. The diagonal is left out of the columns
    (each class's variance would swamp its covariances with the others).

    ``classes_per_specialist`` None: each class joins its nearest centroid's cluster
    and, with ``overlap`` = n > 0, also those of its next n nearest (overlapping
    clusters). ``classes_per_specialist`` M: each specialist takes the M classes
    nearest its centroid (clusters may then overlap, or leave classes to the
    generalist alone). Deterministic for a given ``seed``. Each cluster is sorted.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 2:
        raise Error(f"the covariance must be a square matrix of at least 2 classes, got shape {cov.shape}")
    if not np.isfinite(cov).all():
        raise Error("the covariance has values that are not finite")
    C = cov.shape[0]
    k = _int("num_specialists", num_specialists, 1)
    if k > C:
        raise option_error("num_specialists", f"must be at most the number of classes ({C}), got {k}")
    overlap = _int("overlap", overlap, 0)
    if classes_per_specialist is not None:
        m = _int("classes_per_specialist", classes_per_specialist, 1)
        if m >= C:
            raise option_error("classes_per_specialist", f"must be below the number of classes ({C}): the "
                                                         f"others are the dustbin, got {m}")
        if overlap:
            raise option_error("overlap", "applies when the clustering sizes the specialists; with "
                                          "{classes_per_specialist} each takes the classes nearest its centroid",
                               others=["classes_per_specialist"])
    if overlap >= k:
        raise option_error("overlap", f"must be below {{num_specialists}} ({k}), got {overlap}",
                           others=["num_specialists"])
    restarts = _int("restarts", restarts, 1)
    rng = np.random.default_rng(_int("seed", seed, 0))
    # The points are the columns, each without its own variance: for a confident generalist the
    # variances are ~10x the covariances and would make every two classes about equally far
    # apart (on the digits, K-means then puts 6 to 8 of the 10 classes in one cluster).
    points = cov.T.copy()
    np.fill_diagonal(points, 0.0)
    assign, cent = _kmeans(points, k, rng, restarts)
    d2 = _sqdist(points, cent)  # classes x centroids
    if classes_per_specialist is not None:
        clusters = [sorted(int(c) for c in np.argsort(d2[:, j], kind="stable")[:classes_per_specialist])
                    for j in range(k)]
    else:
        # Each class joins its own cluster (K-means leaves none empty; nearest-centroid ties, as
        # between the identical columns of classes never predicted, would), then with overlap n
        # the n nearest others.
        order = np.argsort(d2, axis=1, kind="stable")
        members: List[set] = [set() for _ in range(k)]
        for i in range(C):
            own = int(assign[i])
            members[own].add(i)
            for j in [int(j) for j in order[i] if j != own][:overlap]:
                members[j].add(i)
        clusters = [sorted(m) for m in members]
    for j, c in enumerate(clusters):
        if not c:
            raise Error(f"specialist {j} has no class: the clustering found fewer than {k} distinct groups "
                        "(classes the generalist never predicts have identical columns): ask for fewer "
                        "specialists")
        if len(c) >= C:
            raise Error(f"specialist {j} would hold all {C} classes, leaving its dustbin empty: ask for more "
                        "specialists, less overlap, or fewer classes per specialist")
    return clusters


# -- the dustbin -----------------------------------------------------------------

def _final_affine(model: Model, what: str) -> int:
    comps = model.components
    if len(comps) < 2 or comps[-1].kind != "Softmax":
        raise Error(f"{what}: must end in <Softmax> (its posteriors are clustered and combined), "
                    f"ends in {comps[-1].marker if comps else 'nothing'}")
    if comps[-2].kind != "AffineTransform":
        raise Error(f"{what}: the <Softmax> must follow an <AffineTransform> (whose rows a specialist keeps), "
                    f"follows {comps[-2].marker}")
    return len(comps) - 2


def _hidden_net(model: Model) -> Optional[Network]:
    """The network that gives the input of the final affine (None: the input itself)."""
    k = _final_affine(model, "model")
    return Network(Model([c for c in model.components[:k]])) if k > 0 else None


class _Picked(Mapping):
    """A specialist's data, read again at each pass: the chosen frames of every utterance
    (after the feature transform, which runs on whole utterances, so that splicing sees
    each frame's neighbours), in order, as pseudo-utterances of ``_CHUNK`` frames named
    ``prefix`` + their number. Only the choice (a flag per frame) is held in memory."""

    def __init__(self, source: Source, ft: Optional[Network], keys: List[str], lengths: np.ndarray,
                 chosen: np.ndarray, prefix: str) -> None:
        self.source, self.ft, self.prefix = source, ft, prefix
        ends = np.cumsum(lengths)
        self.chosen = {k: chosen[e - n:e] for k, n, e in zip(keys, lengths, ends)}
        self.count = -(-int(chosen.sum()) // _CHUNK)

    def items(self):  # one pass over the features (a generator, not a view)
        buf: List[np.ndarray] = []
        held = j = 0
        for key, v in self.source:
            mask = self.chosen.get(key)
            if mask is None:
                raise Error(f"features: utterance {key} was not in the first pass over them (the features "
                            "changed while the specialists trained)")
            if len(mask) != len(v):
                raise Error(f"features: utterance {key} has {len(v)} frames, {len(mask)} in the first pass over "
                            "them (the features changed while the specialists trained)")
            if not mask.any():
                continue
            x = self.ft(v) if self.ft is not None else v
            buf.append(x[mask])
            held += buf[-1].shape[0]
            if held >= _CHUNK:
                block = np.concatenate(buf) if len(buf) > 1 else buf[0]
                start = 0
                while held - start >= _CHUNK:
                    yield f"{self.prefix}{j:07d}", block[start:start + _CHUNK]
                    j += 1
                    start += _CHUNK
                buf, held = [block[start:]], held - start
        if held:
            yield f"{self.prefix}{j:07d}", np.concatenate(buf)

    def values(self):
        return (x for _, x in self.items())

    def __iter__(self):
        return (k for k, _ in self.items())

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: str) -> np.ndarray:
        for k, x in self.items():
            if k == key:
                return x
        raise KeyError(key)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    mx = z.max(1, keepdims=True)
    return (mx + np.log(np.exp(z - mx).sum(1, keepdims=True)))[:, 0]


def dustbin_model(model: Model, classes: Sequence[int], hidden: np.ndarray) -> Tuple[Model, float]:
    """``model`` with its output reduced to ``classes`` plus a dustbin (the last output).

    The rows of the final ``<AffineTransform>`` for ``classes`` are kept; the dustbin's
    row and bias are the least-squares fit, over the frames whose final-affine inputs
    are ``hidden``, of the log-sum-exp of the other classes' logits (so its softmax
    gives the dustbin the probability of all the others, as far as an affine
    function of ``hidden`` can). Returns (model, RMS error of the fit in nats).
    """
    fit = _DustbinFit(model, classes)
    fit.add(np.asarray(hidden))
    return fit.model()


def _split_classes(model: Model, classes: Sequence[int]) -> Tuple[int, np.ndarray, np.ndarray]:
    """(index of the final affine, ``classes``, the other classes) of a specialist of ``model``,
    checked: distinct ids of its outputs, fewer than all of them (the dustbin holds the rest)."""
    k = _final_affine(model, "model")
    C = model.output_dim
    cls = np.asarray(classes, dtype=np.int64)
    other = np.setdiff1d(np.arange(C), cls)
    if cls.size == 0 or other.size == 0 or cls.min() < 0 or cls.max() >= C or len(np.unique(cls)) != cls.size:
        raise Error(f"classes must be distinct ids in [0, {C}), fewer than all of them, got {list(classes)}")
    return k, cls, other


class _DustbinFit:
    """The least-squares dustbin row of :func:`dustbin_model`, from moments accumulated over
    batches of final-affine inputs (so that the frames need not be in memory at once)."""

    def __init__(self, model: Model, classes: Sequence[int]) -> None:
        self.base = model
        self.k, self.cls, self.other = _split_classes(model, classes)
        aff = model.components[self.k]
        assert aff.weight is not None and aff.bias is not None  # an <AffineTransform> (checked above)
        self.w: np.ndarray = aff.weight.astype(np.float64)
        self.b: np.ndarray = aff.bias.astype(np.float64)
        # The other classes' rows, once (float32: the logits as the network computes them).
        self.w_other = np.ascontiguousarray(aff.weight[self.other])
        self.b_other = aff.bias[self.other]
        d = aff.input_dim + 1
        self.gram, self.rhs, self.tt, self.frames = np.zeros((d, d)), np.zeros(d), 0.0, 0

    def add(self, hidden: np.ndarray) -> None:
        h32 = np.asarray(hidden, dtype=np.float32)
        target = _logsumexp((h32 @ self.w_other.T + self.b_other).astype(np.float64))
        h = h32.astype(np.float64)
        a = np.hstack([h, np.ones((len(h), 1))])
        self.gram += a.T @ a
        self.rhs += a.T @ target
        self.tt += float(target @ target)
        self.frames += len(h)

    def model(self) -> Tuple[Model, float]:
        if self.frames == 0:
            raise Error("the dustbin row needs at least one frame to fit")
        # A little ridge (relative to the inputs' scale) keeps collinear hidden units harmless.
        gram = self.gram.copy()
        gram[np.diag_indices_from(gram)] += 1e-8 * max(np.trace(gram) / len(gram), 1e-30)
        sol = np.linalg.solve(gram, self.rhs)
        # The residual's energy from the moments: |a sol - t|^2 = sol' G sol - 2 sol' a't + t't.
        rms = float(np.sqrt(max(sol @ self.gram @ sol - 2.0 * sol @ self.rhs + self.tt, 0.0) / self.frames))
        model, aff, cls, w, b, k = self.base, self.base.components[self.k], self.cls, self.w, self.b, self.k
        rows = np.vstack([w[cls], sol[None, :-1]]).astype(np.float32)
        bias = np.concatenate([b[cls], sol[-1:]]).astype(np.float32)
        new = Component.affine(rows, bias, learn_rate_coef=aff.learn_rate_coef,
                               bias_learn_rate_coef=aff.bias_learn_rate_coef, max_norm=aff.max_norm)
        comps = [c.copy() for c in model.components[:k]] + [new, Component.activation("Softmax", len(cls) + 1)]
        return Model(comps, binary=model.binary, dialect=model.dialect), rms


def dustbin_teacher(model: Model, classes: Sequence[int]) -> LogitsTeacher:
    """The exact teacher of the specialist of ``classes``: a logits teacher (see
    :func:`svdistill.distill`) whose logits are ``model``'s for ``classes`` and, last, the
    log-sum-exp of the other classes' logits (computed stably in float64), so that its
    softmax is ``model``'s posteriors regrouped: ``classes``, then the sum of the others.
    Its input is ``model``'s (after any feature transform)."""
    _, cls, other = _split_classes(model, classes)
    net = Network(model, no_softmax=True)

    def logits(x: np.ndarray) -> np.ndarray:
        z = net(x)
        out = np.empty((len(z), cls.size + 1), np.float32)
        out[:, :-1] = z[:, cls]
        out[:, -1] = _logsumexp(z[:, other].astype(np.float64))
        return out

    from .distill.checkpoint import model_fingerprint
    return LogitsTeacher(model.input_dim, cls.size + 1, logits, "generalist regrouped to the specialist's classes",
                         fingerprint=dict(generalist=model_fingerprint(model), classes=[int(c) for c in cls]))


# -- training (section 5.2) ------------------------------------------------------

def specialist_file(index: int) -> str:
    """The file name of specialist ``index`` (0-based) in the output folder."""
    return f"specialist-{index}.nnet"


@dataclass
class SpecialistsResult:
    """What :func:`specialists` made: ``ensemble`` (the path of ensemble.json),
    ``classes`` (each specialist's), ``files`` (each specialist's model path),
    ``reports`` (DistillReport by index, for those trained in this call),
    ``init_dustbin_rms`` (by index: the RMS error, in nats, of the least-squares
    dustbin row each specialist started with; its teacher is exact)."""

    ensemble: str
    classes: List[List[int]]
    files: List[str]
    reports: Dict[int, DistillReport] = field(default_factory=dict)
    init_dustbin_rms: Dict[int, float] = field(default_factory=dict)


def _stored_clusters(path: str, num_classes: int, k: int, classes_per_specialist: Optional[int], overlap: int,
                     seed: int) -> List[List[int]]:
    """The classes of an ensemble.json written by an earlier run with the same settings."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        settings = spec["clustering"]
        clusters = [[int(c) for c in sp["classes"]] for sp in spec["specialists"]]
        n = int(spec["num_classes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Error(f"{path}: cannot read the clustering of an earlier run ({e}); remove it to cluster again") \
            from None
    want = {"num_specialists": k, "classes_per_specialist": classes_per_specialist, "overlap": int(overlap),
            "seed": seed}
    if n != num_classes or any(settings.get(key) != v for key, v in want.items()) or len(clusters) != k:
        raise Error(f"{path} was made with other settings ({settings}, {n} classes) than this run ({want}, "
                    f"{num_classes} classes): give the same ones, or another OUTDIR")
    return clusters


def specialists(generalist: ModelLike, feats: FeatsLike, outdir: Union[str, "os.PathLike[str]"], *,
                feature_transform: Optional[ModelLike] = None, num_specialists: int = 4,
                classes_per_specialist: Optional[int] = None, overlap: int = 0,
                init: Optional[ModelLike] = None, labels: Optional[LabelsLike] = None,
                only: Optional[int] = None, seed: int = 777, **options: Any) -> SpecialistsResult:
    """Train specialists for ``generalist`` (section 5 of Hinton et al. 2015) into ``outdir``.

    Parameters
    ----------
    generalist : Model or path
        Ends in ``<AffineTransform>`` + ``<Softmax>``.
    feats : rspecifier, dict of arrays or one array
        The data: the generalist's predictions over it are clustered, and each
        specialist trains on a part of it. It is read once for the clustering,
        then again by each specialist (once for its initial dustbin row, then
        as distill reads its data, every epoch): only a class id and a flag per
        frame are held in memory, so it must be re-readable (a file, an scp or
        a command, not stdin).
    feature_transform : Model or path, optional
        Run frozen on each utterance first; recorded in ``ensemble.json``.
    num_specialists : int
        K, the clusters.
    classes_per_specialist, overlap
        As :func:`cluster_classes`.
    init : Model or path, optional
        Where each specialist starts (e.g. a compressed generalist); its output
        layer is reduced as the teacher's. Default: the generalist.
    labels : alignment rspecifier, dict or array, optional
        Pdf ids: they decide which frames belong to a specialist's classes (else the
        generalist's arg-max), and enter the loss (relabelled to the specialist's
        outputs, the dustbin for the others) with distill's ``hard_weight``.
    only : int, optional
        Train only specialist ``only`` (0-based), so that specialists can be trained
        apart: the clustering comes from OUTDIR's ``ensemble.json`` when an earlier
        run wrote one (with other settings: an error), so every run pairs each
        model with the same classes.
    seed : int
        Seeds the clustering, the sampling of the other frames, and distill.
    **options
        Passed to :func:`svdistill.distill` (schedule, optimizer, temperature, ...);
        not ``teacher``, ``teacher_ensemble``, ``output``, ``feature_transform`` or
        ``cv_feats``/``cv_labels``, which are decided here; not hints (the teacher is
        no model).

    Returns
    -------
    SpecialistsResult
    """
    for name in ("hint_weight", "hint_layers"):
        if name in options:
            raise option_error(name, "does not apply to specialists(): hints match one teacher model's "
                                     "activations, and a specialist's teacher is the generalist regrouped")
    for name in ("teacher", "teachers", "teacher_ensemble", "output", "cv_feats", "cv_labels", "student"):
        if name in options:
            raise option_error(name, "is decided by specialists(): each specialist's teacher is the generalist "
                                     "reduced to its classes, its data a part of the features, its output a "
                                     "file in the output folder")
    k = _int("num_specialists", num_specialists, 1)
    seed = _int("seed", seed, 0)
    check_options(seed=seed, **options)  # before the pass over the data, not after it
    if only is not None:
        only = _int("only", only, 0)
        if only >= k:
            raise option_error("only", f"must be below {{num_specialists}} ({k}), got {only}",
                               others=["num_specialists"])
    g_model = _load(generalist)
    _final_affine(g_model, "the generalist")
    C = g_model.output_dim
    if k > C:
        raise option_error("num_specialists", f"must be at most the generalist's classes ({C}), got {k}")
    ft_model = _load(feature_transform) if feature_transform is not None else None
    init_model = _load(init) if init is not None else None
    if init_model is not None:
        _final_affine(init_model, "init")
        if init_model.output_dim != C or init_model.input_dim != g_model.input_dim:
            raise Error(f"init: maps {init_model.input_dim} to {init_model.output_dim} dims; the generalist "
                        f"maps {g_model.input_dim} to {C}")

    # One pass over the data: the generalist's predictions are summed (their covariance) and
    # each frame's class kept (its label, else the generalist's arg-max); the features are not
    # kept (a corpus of hundreds of hours would not fit): each specialist reads them again.
    ft_net = Network(ft_model) if ft_model is not None else None
    g_net = Network(g_model)
    lab = load_labels(labels, "labels")
    source = Source(feats, "features")
    keys: List[str] = []
    classes_of: List[np.ndarray] = []
    s1, s2 = np.zeros(C), np.zeros((C, C))
    bar = Progress("specialists: clustering pass", unit="frames", enabled=options.get("progress"))
    seen = 0
    for key, v in source:
        seen += len(v)
        bar.update(seen, f"{len(keys) + 1:,} utterance{'s' if keys else ''}")
        x = ft_net(v) if ft_net is not None else v
        if x.shape[1] != g_model.input_dim:
            raise Error(f"features: utterance {key} has {x.shape[1]} dims (after the feature transform); the "
                        f"generalist expects {g_model.input_dim}")
        pu: np.ndarray = g_net(x).astype(np.float64)
        s1 += pu.sum(0)
        s2 += pu.T @ pu
        if lab is not None:
            if key not in lab:
                raise Error(f"labels: no alignment for utterance {key}")
            if len(lab[key]) != len(x):
                raise Error(f"labels: utterance {key} has {len(lab[key])} labels for {len(x)} frames")
            classes_of.append(lab[key].astype(np.int32))
        else:
            classes_of.append(pu.argmax(1).astype(np.int32))
        keys.append(key)
    bar.close()
    if not keys:
        raise Error("features: no utterances")
    if len(set(keys)) != len(keys):
        raise Error("features: an utterance key appears twice (each specialist reads the features again "
                    "and picks its frames by key)")
    lengths = np.array([len(c) for c in classes_of], dtype=np.int64)
    n = int(lengths.sum())
    if n < 2:
        raise Error("features: the covariance of the generalist's predictions needs at least 2 frames")
    covariance = (s2 - np.outer(s1, s1) / n) / (n - 1)
    cls_of_frame = np.concatenate(classes_of)
    del classes_of
    if lab is not None and (cls_of_frame.min() < 0 or cls_of_frame.max() >= C):
        raise Error(f"labels: pdf ids must lie in [0, {C}), got {int(cls_of_frame.min())}..{int(cls_of_frame.max())}")
    clusters = cluster_classes(covariance, k, classes_per_specialist=classes_per_specialist,
                               overlap=overlap, seed=seed)

    out = os.fspath(outdir)
    os.makedirs(out, exist_ok=True)
    stored = os.path.join(out, "ensemble.json")
    if only is not None and os.path.exists(stored):
        # Specialists trained one by one (on several machines) must share one clustering: the
        # one already written, not one recomputed here (rounding differs between machines and
        # BLAS kernels, and a near tie in K-means could then pair a model with other classes).
        clusters = _stored_clusters(stored, C, k, classes_per_specialist, overlap, seed)
    files = [specialist_file(i) for i in range(k)]
    result = SpecialistsResult(ensemble=os.path.join(out, "ensemble.json"), classes=clusters,
                               files=[os.path.join(out, f) for f in files])
    for i in range(k) if only is None else [only]:
        cls = np.asarray(clusters[i])
        inside = np.flatnonzero(np.isin(cls_of_frame, cls))
        outside = np.flatnonzero(~np.isin(cls_of_frame, cls))
        if inside.size == 0:
            raise Error(f"specialist {i}: no frame of its classes {clusters[i]} in the data")
        rng = np.random.default_rng((seed, i))
        # Half the frames from its classes: all of them, and as many of the others (or all, if fewer).
        picked = np.sort(np.concatenate([inside, rng.choice(outside, min(inside.size, outside.size),
                                                             replace=False)]))
        chosen: np.ndarray = np.zeros(n, bool)
        chosen[picked] = True
        feats_i = _Picked(source, ft_net, keys, lengths, chosen, f"s{i}-")
        start = g_model if init_model is None else init_model
        fit = _DustbinFit(start, cls)
        hidden = _hidden_net(start)
        bar.start(f"specialist {i}: initial dustbin row")
        block: List[np.ndarray] = []
        for _, x in itertools.chain(feats_i.items(), [("", None)]):
            if x is not None:
                block.append(x)
            # in blocks of frames, not chunks: the moments' GEMMs run at speed on tall blocks
            if block and (x is None or sum(len(b) for b in block) >= _FIT_BLOCK):
                xb = np.concatenate(block)
                fit.add(hidden(xb) if hidden is not None else xb)
                block = []
                bar.update(fit.frames)
        bar.close()
        student, rms = fit.model()
        labels_i = None
        if lab is not None:
            remap: np.ndarray = np.full(C, len(cls), np.int32)
            remap[cls] = np.arange(len(cls), dtype=np.int32)
            y_i = remap[cls_of_frame[picked]]
            labels_i = {f"s{i}-{j // _CHUNK:07d}": y_i[j:j + _CHUNK] for j in range(0, len(y_i), _CHUNK)}
        if options.get("log") is not None:  # each specialist's table under a line saying whose it is
            options["log"](f"specialist {i}: {len(cls)} classes, {len(picked):,} frames ({inside.size:,} of its "
                           f"classes)")
        _, report = distill(student, feats_i, teacher=dustbin_teacher(g_model, cls), labels=labels_i,
                            output=result.files[i], seed=seed, **options)
        result.reports[i] = report
        result.init_dustbin_rms[i] = rms

    def where(model_arg: Optional[ModelLike], model: Optional[Model], name: str) -> Optional[str]:
        if model is None:
            return None
        if isinstance(model_arg, (str, os.PathLike)):
            return os.path.abspath(os.fspath(model_arg))
        path = os.path.join(out, name)  # given in memory: written beside the specialists
        model.write(path, binary=True)
        return name

    # Each specialist's initial dustbin fit error: this run's, else an earlier run's (--only).
    rms_of: Dict[int, Optional[float]] = {}
    if only is not None and os.path.exists(stored):
        try:
            with open(stored, encoding="utf-8") as f:
                for j, sp in enumerate(json.load(f)["specialists"]):
                    rms_of[j] = sp.get("init_dustbin_rms")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # _stored_clusters read this file above: only the figures are missing
    rms_of.update(result.init_dustbin_rms)
    spec = {"format": FORMAT, "version": VERSION,
            "generalist": where(generalist, g_model, "generalist.nnet"),
            "feature_transform": where(feature_transform, ft_model, "feature_transform.nnet"),
            "num_classes": int(C),
            "specialists": [dict({"file": f, "classes": c}, **({} if rms_of.get(i) is None else
                                                               {"init_dustbin_rms": rms_of[i]}))
                            for i, (f, c) in enumerate(zip(files, clusters))],
            "clustering": {"num_specialists": k, "classes_per_specialist": classes_per_specialist,
                           "overlap": int(overlap), "seed": seed}}
    with atomic_output(result.ensemble) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=1)
            f.write("\n")
    return result


# -- combination (section 5.3) ---------------------------------------------------

def combine(generalist_posteriors: np.ndarray, specialist_posteriors: Sequence[np.ndarray],
            classes: Sequence[Sequence[int]], *, top_n: int = DEFAULT_TOP_N, tolerance: float = DEFAULT_TOLERANCE,
            max_iterations: int = DEFAULT_MAX_ITERATIONS, apply_log: bool = False,
            return_info: bool = False) -> Any:
    """Per frame, q minimising KL(p_g || q) + sum over active m of KL(p_m || q_m) (section 5.3).

    Parameters
    ----------
    generalist_posteriors : (frames x C) array, rows distributions
    specialist_posteriors : one (frames x (len(classes[m]) + 1)) array per specialist,
        its classes in the order of ``classes[m]``, then the dustbin
    classes : each specialist's class ids in [0, C)
    top_n : the generalist's most probable classes that make a specialist holding
        any of them active; a frame without an active specialist keeps p_g
    tolerance, max_iterations : the iteration (EM, in the core: linear convergence)
        stops when the last step and the distance to the minimiser it implies (the
        step times r / (1 - r), r the ratio of the last two steps) are both at most
        ``tolerance`` in every entry of q, or after ``max_iterations``
    apply_log : return log(q + 1e-20), as forward's ``apply_log``
    return_info : also return a dict: ``iterations`` and ``active`` (per frame),
        ``unconverged`` (frames that hit ``max_iterations``)

    Returns
    -------
    q (frames x C float32), or (q, info) with ``return_info``
    """
    top_n = _top_n(top_n)
    max_iterations = _int("max_iterations", max_iterations, 1)
    tolerance = _tolerance(tolerance)
    if len(specialist_posteriors) != len(classes):
        raise Error(f"got {len(specialist_posteriors)} specialists' posteriors for {len(classes)} class lists")
    g = np.asarray(generalist_posteriors, dtype=np.float32)
    if g.ndim == 2:
        _top_n(top_n, g.shape[1])
    cls = [[int(c) for c in cl] for cl in classes]
    q, its, act, unconverged = _core.combine_specialists(g, [np.asarray(s, dtype=np.float32)
                                                             for s in specialist_posteriors],
                                                         cls, top_n, float(tolerance), max_iterations)
    if apply_log:
        q = np.log(q + np.float32(1e-20))
    if return_info:
        return q, {"iterations": its, "active": act, "unconverged": int(unconverged)}
    return q


class Ensemble:
    """A generalist and its specialists, as ``ensemble.json`` names them.

    ``Ensemble(path, top_n=, tolerance=, max_iterations=)`` loads the models once, with
    the options of its combination (:func:`combine`'s); calling it on one utterance's
    features (frames x dims, before the feature transform) returns the combined
    posteriors; :meth:`logits` gives log q (the ensemble as a teacher of
    :func:`svdistill.distill` and :func:`svdistill.compare`). Attributes: ``path``,
    ``generalist`` (Model), ``feature_transform`` (Model or None), ``specialists``
    (list of Model), ``classes`` (each specialist's), ``num_classes``, ``input_dim``
    (before the feature transform), ``top_n``, ``tolerance``, ``max_iterations``.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, top_n: int = DEFAULT_TOP_N,
                 tolerance: float = DEFAULT_TOLERANCE, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> None:
        self.path = os.fspath(path)
        self.top_n = _top_n(top_n)
        self.tolerance = _tolerance(tolerance)
        self.max_iterations = _int("max_iterations", max_iterations, 1)
        try:
            with open(self.path, encoding="utf-8") as f:
                spec = json.load(f)
        except OSError as e:
            raise Error(f"{self.path}: cannot read the ensemble: {e.strerror or e}") from None
        except ValueError as e:
            raise Error(f"{self.path}: not an ensemble (not JSON: {e})") from None
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise Error(f"{self.path}: not an ensemble (no \"format\": \"{FORMAT}\")")
        if spec.get("version") != VERSION:
            raise Error(f"{self.path}: ensemble version {spec.get('version')!r}; this svdistill reads {VERSION}")
        base = os.path.dirname(os.path.abspath(self.path))

        def resolve(p: Any, what: str) -> str:
            if not isinstance(p, str) or not p:
                raise Error(f"{self.path}: {what}: expected a file name, got {p!r}")
            return p if os.path.isabs(p) else os.path.join(base, p)

        try:
            self.generalist = _load(resolve(spec.get("generalist"), "generalist"))
            ft = spec.get("feature_transform")
            self.feature_transform = _load(resolve(ft, "feature_transform")) if ft is not None else None
            entries = spec.get("specialists")
            if not isinstance(entries, list) or not entries:
                raise Error(f"{self.path}: \"specialists\" must be a non-empty list")
            self.classes: List[List[int]] = []
            self.specialists: List[Model] = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict) or not isinstance(entry.get("classes"), list):
                    raise Error(f"{self.path}: specialist {i}: expected {{\"file\": ..., \"classes\": [...]}}")
                self.classes.append([int(c) for c in entry["classes"]])
                self.specialists.append(_load(resolve(entry.get("file"), f"specialist {i}")))
        except (TypeError, ValueError) as e:
            raise Error(f"{self.path}: {e}") from None
        _final_affine(self.generalist, "the generalist")
        self.num_classes = self.generalist.output_dim
        if spec.get("num_classes") != self.num_classes:
            raise Error(f"{self.path}: says {spec.get('num_classes')} classes; the generalist has {self.num_classes}")
        for i, (m, c) in enumerate(zip(self.specialists, self.classes)):
            if m.output_dim != len(c) + 1:
                raise Error(f"{self.path}: specialist {i} outputs {m.output_dim} dims, not its {len(c)} classes "
                            "and the dustbin")
            if m.input_dim != self.generalist.input_dim:
                raise Error(f"{self.path}: specialist {i} takes {m.input_dim} dims; the generalist "
                            f"{self.generalist.input_dim}")
            if not c or min(c) < 0 or max(c) >= self.num_classes or len(set(c)) != len(c):
                raise Error(f"{self.path}: specialist {i}: classes must be distinct ids in [0, {self.num_classes})")
        self.top_n = _top_n(self.top_n, self.num_classes)
        self._ft = Network(self.feature_transform) if self.feature_transform is not None else None
        self._g = Network(self.generalist)
        self._s = [Network(m) for m in self.specialists]
        self.input_dim = self._ft.input_dim if self._ft is not None else self._g.input_dim

    def with_options(self, top_n: Optional[int] = None, tolerance: Optional[float] = None,
                     max_iterations: Optional[int] = None) -> "Ensemble":
        """The same models (not copied) with other options of the combination (None: as now)."""
        e = copy.copy(self)
        if top_n is not None:
            e.top_n = _top_n(top_n, self.num_classes)
        if tolerance is not None:
            e.tolerance = _tolerance(tolerance)
        if max_iterations is not None:
            e.max_iterations = _int("max_iterations", max_iterations, 1)
        return e

    def feature_transform_for(self, given: Optional[Model], ensemble_option: str) -> Optional[Model]:
        """The feature transform of a student that learns from, or is compared with, this
        ensemble (given as ``ensemble_option``): the ensemble's, which a ``given`` one must
        equal, since teacher and student see the same frames."""
        own = self.feature_transform
        if given is None:
            return own
        if own is None:
            raise option_error("feature_transform", f"is given, but {{{ensemble_option}}} ({self.path}) names none: "
                                                    "its models take the features as they are, and teacher and "
                                                    "student see the same frames", others=[ensemble_option])
        if not same_model(given, own):
            raise option_error("feature_transform", f"differs from the one {{{ensemble_option}}} names "
                                                    f"({self.path}): teacher and student see the same frames; "
                                                    "leave it out to use the ensemble's", others=[ensemble_option])
        return own

    def __call__(self, feats: np.ndarray, *, top_n: Optional[int] = None, tolerance: Optional[float] = None,
                 max_iterations: Optional[int] = None, apply_log: bool = False, return_info: bool = False) -> Any:
        """Combined posteriors of one utterance (frames x classes); options as :func:`combine`
        (None: the ensemble's). Only the specialists active on some frame are run."""
        x = self._ft(feats) if self._ft is not None else np.asarray(feats, dtype=np.float32)
        return self._combined(x, self.top_n if top_n is None else top_n,
                              self.tolerance if tolerance is None else tolerance,
                              self.max_iterations if max_iterations is None else max_iterations,
                              apply_log, return_info)

    def logits(self, x: np.ndarray, *, raw: bool = False, return_info: bool = False) -> Any:
        """log q of frames ``x`` *after* the feature transform (frames x the generalist's input
        dim; ``raw``: before it, as :meth:`__call__` takes them), with the ensemble's options
        (``return_info``: also :func:`combine`'s info).
        Its softmax at temperature T, softmax(log q / T), gives the soft targets the ensemble
        teaches with.

        Entries of q below float32's smallest normal number (1.2e-38) count as it (log -87.3):
        the generalist's float32 softmax cannot tell smaller probabilities apart either, and a
        floor far below every represented probability leaves the tempered targets as they are
        (an additive 1e-20, say, would give every such class 1e-20^(1/T) at temperature T: at
        T = 10, 0.01 per class)."""
        if raw and self._ft is not None:
            x = self._ft(x)
        q, info = self._combined(np.asarray(x, dtype=np.float32), self.top_n, self.tolerance, self.max_iterations,
                                 False, True)
        lq = np.log(np.maximum(q, np.finfo(np.float32).tiny))
        return (lq, info) if return_info else lq

    def _combined(self, x: np.ndarray, top_n: int, tolerance: float, max_iterations: int, apply_log: bool,
                  return_info: bool) -> Any:
        pg = self._g(x)
        top_n = _top_n(top_n, self.num_classes)
        top = np.argsort(-pg, axis=1, kind="stable")[:, :top_n]
        outs = []
        for net, c in zip(self._s, self.classes):
            if np.isin(top, c).any():
                outs.append(net(x))
            else:  # never active: its outputs are not read
                outs.append(np.zeros((len(x), len(c) + 1), np.float32))
        return combine(pg, outs, self.classes, top_n=top_n, tolerance=tolerance, max_iterations=max_iterations,
                       apply_log=apply_log, return_info=return_info)


def as_ensemble(value: Any, option: str, top_n: Optional[int] = None, tolerance: Optional[float] = None,
                max_iterations: Optional[int] = None) -> Ensemble:
    """``value`` (the path of an ensemble.json, or an :class:`Ensemble`), given as ``option``,
    as an Ensemble with these options of its combination (None: its own, or the defaults)."""
    if isinstance(value, Ensemble):
        return value.with_options(top_n, tolerance, max_iterations)
    if not isinstance(value, (str, os.PathLike)):
        raise option_error(option, f"expected the path of an ensemble.json or an Ensemble, got {type(value).__name__}")
    return Ensemble(value).with_options(top_n, tolerance, max_iterations)


def _top_n(value: Any, classes: Optional[int] = None) -> int:
    """``top_n`` checked: an integer >= 1, and at most ``classes`` when they are known."""
    top_n = _int("top_n", value, 1)
    if classes is not None and top_n > classes:
        raise option_error("top_n", f"must be at most the classes ({classes}), got {top_n}")
    return top_n


def _tolerance(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < float("inf"):
        raise option_error("tolerance", f"must be a finite number > 0, got {value!r}")
    return float(value)


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise option_error(name, f"must be an integer, got {value!r}")
    if value < low:
        raise option_error(name, f"must be >= {low}, got {value}")
    return int(value)
