"""Knowledge distillation (Hinton, Vinyals & Dean 2015) and frame-level training.

A student (typically the output of :func:`svdistill.compress`) is fine-tuned on
the soft targets of one or more teachers: softmax(teacher logits / T) against
the student's softmax at the same temperature, the cross-entropy scaled by
T^2, optionally mixed with cross-entropy against labels (Kaldi alignments as
pdf ids). Without teachers it is ordinary frame-level cross-entropy training,
as Kaldi's ``nnet-train-frmshuff`` does it.

The data path follows Kaldi's nnet1 recipes: the feature transform runs frozen
on each utterance; frames go through a bounded shuffling buffer
(``randomizer_size`` frames) into minibatches; every epoch ends with a
cross-validation pass; the learning rate follows the "newbob" schedule of
``steps/nnet/train_scheduler.sh`` (halve when the relative CV improvement drops
below ``start_halving_impr``, stop when it drops below ``end_halving_impr``),
and an epoch that makes the CV loss worse is rejected. The best model is kept.

Forward, backward and the update run in the C++ core, one minibatch per call
with the GIL released; teacher outputs are computed on the fly for each
minibatch, never stored.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
import zlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .errors import Error
from .forward import ModelLike, Network, _load, iter_archive
from .io import PathOrFile, write
from .model import Model

FeatsLike = Union[str, Mapping[str, np.ndarray], np.ndarray]
LabelsLike = Union[str, Mapping[str, np.ndarray], np.ndarray]

#: Kaldi's nnet-train-frmshuff accepts alignments up to this many frames longer or shorter.
LENGTH_TOLERANCE = 5


@dataclasses.dataclass
class EpochReport:
    """One row of the per-epoch table. Losses are per frame.

    ``objective`` is the training loss: (1 - a) T^2 KL(teacher_T || student_T)
    + a CE(labels) (its KL form: the teacher's entropy is left out, so 0 means
    a perfect match). ``kl`` is KL(teacher || student) at temperature 1, as
    ``svdistill compare`` reports it. Agreement is top-1 agreement with the
    teacher, accuracy is against the labels (None without them). A ``diverged``
    epoch was abandoned when its training objective blew up (its CV figures are
    nan); training went on from the best model at half the learning rate.
    """

    epoch: int
    learn_rate: float
    train_objective: Optional[float]
    train_agreement: Optional[float]
    train_accuracy: Optional[float]
    cv_objective: float
    cv_kl: Optional[float]
    cv_agreement: Optional[float]
    cv_accuracy: Optional[float]
    train_frames: int
    seconds: float
    accepted: Optional[bool]
    diverged: bool = False

    @property
    def frames_per_second(self) -> Optional[float]:
        return self.train_frames / self.seconds if self.seconds > 0 and self.train_frames else None


@dataclasses.dataclass
class DistillReport:
    """What :func:`distill` did: the per-epoch table and how it ended."""

    epochs: List[EpochReport]
    best_epoch: int
    stopped: str
    temperature: float
    hard_weight: float
    teachers: int
    cv_frames: int
    cv_source: str
    skipped_utterances: int = 0
    unlabelled_utterances: int = 0

    @property
    def initial(self) -> EpochReport:
        return self.epochs[0]

    @property
    def best(self) -> EpochReport:
        return self.epochs[self.best_epoch]

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        for e, row in zip(self.epochs, d["epochs"]):
            row["frames_per_second"] = e.frames_per_second
        return d

    def format_table(self) -> str:
        return "\n".join([_header()] + [_row(e) for e in self.epochs] + [self.summary()])

    def summary(self) -> str:
        b, i = self.best, self.initial
        parts = [f"best epoch {self.best_epoch}: CV objective {i.cv_objective:.4f} -> {b.cv_objective:.4f}"]
        if b.cv_kl is not None:
            parts.append(f"KL {i.cv_kl:.4f} -> {b.cv_kl:.4f}")
        if b.cv_agreement is not None:
            parts.append(f"agreement {i.cv_agreement:.2%} -> {b.cv_agreement:.2%}")
        if b.cv_accuracy is not None:
            parts.append(f"accuracy {i.cv_accuracy:.2%} -> {b.cv_accuracy:.2%}")
        text = "; ".join(parts) + f" ({self.stopped})"
        if self.skipped_utterances:
            text += f"\n{self.skipped_utterances} utterances skipped: no labels, or labels more than " \
                    f"{LENGTH_TOLERANCE} frames longer or shorter than the features"
        if self.unlabelled_utterances:
            text += f"\n{self.unlabelled_utterances} utterances without usable labels: trained on the " \
                    "soft targets alone"
        return text


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2%}"


def _num(x: Optional[float], fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def _header() -> str:
    return (f"{'epoch':>5} {'lr':>9} {'train obj':>10} {'train agr':>9} {'train acc':>9} "
            f"{'cv obj':>9} {'cv KL':>8} {'cv agr':>8} {'cv acc':>8} {'frames/s':>9}  result")


def _row(e: EpochReport) -> str:
    fps = e.frames_per_second
    result = ("diverged" if e.diverged else "initial" if e.accepted is None
              else "accepted" if e.accepted else "rejected")
    return (f"{e.epoch:>5} {e.learn_rate:>9.3g} {_num(e.train_objective):>10} {_pct(e.train_agreement):>9} "
            f"{_pct(e.train_accuracy):>9} {'-' if e.diverged else format(e.cv_objective, '.4f'):>9} "
            f"{_num(e.cv_kl):>8} "
            f"{_pct(e.cv_agreement):>8} {_pct(e.cv_accuracy):>8} "
            f"{'-' if fps is None else f'{fps:,.0f}':>9}  {result}")


# -- data -------------------------------------------------------------------

def _is_stdin(rspecifier: str) -> bool:
    spec = rspecifier.split(":", 1)[1] if ":" in rspecifier else rspecifier
    return spec.strip() == "-"


class _Source:
    """Utterances (key, frames x dims) from an rspecifier, a dict or one array; re-iterable."""

    def __init__(self, feats: FeatsLike, what: str) -> None:
        self.what = what
        if isinstance(feats, str):
            if _is_stdin(feats):
                raise Error(f"{what} {feats}: distill reads the features once per epoch, and stdin "
                            "cannot be read twice; give a file, an scp or a command ('ark:cmd |')")
            self.name = feats
        elif isinstance(feats, np.ndarray):
            if feats.ndim != 2:
                raise Error(f"{what}: a feature array must be 2-D (frames x dims), got shape {feats.shape}")
            self.name = "array"
        elif isinstance(feats, Mapping):
            self.name = "dict"
        else:
            raise Error(f"{what}: expected a Kaldi rspecifier, a dict of arrays or a 2-D array, "
                        f"got {type(feats).__name__}")
        self.feats = feats

    def _scp_file(self) -> Optional[str]:
        """The path of a plain ``scp:FILE`` rspecifier (not a command), else None."""
        if not isinstance(self.feats, str) or ":" not in self.feats:
            return None
        kind, path = self.feats.split(":", 1)
        if kind.split(",")[0].strip() != "scp" or path.rstrip().endswith("|"):
            return None
        return path

    def items(self) -> Iterator[Tuple[str, Callable[[], np.ndarray]]]:
        """(key, load) pairs: from an scp file, a matrix is read only when load() is called."""
        scp = self._scp_file()
        if scp is None:
            for k, v in self:
                yield k, (lambda v=v: v)
            return
        import kaldiio
        try:
            table = kaldiio.load_scp(scp)
            keys = list(table.keys())
        except (OSError, ValueError, RuntimeError, EOFError) as e:
            raise Error(f"{self.feats}: cannot read the scp: {e}") from None

        def load(k: str) -> np.ndarray:
            try:
                with warnings.catch_warnings():  # kaldiio warns before it raises: one message is enough
                    warnings.simplefilter("ignore")
                    return np.asarray(table[k], dtype=np.float32)
            except (OSError, ValueError, RuntimeError, EOFError) as e:
                raise Error(f"{self.feats}: utterance {k}: cannot read features: {e}") from None

        for k in keys:
            yield k, (lambda k=k: load(k))

    def __iter__(self) -> Iterator[Tuple[str, np.ndarray]]:
        if isinstance(self.feats, str):
            yield from iter_archive(self.feats)
        elif isinstance(self.feats, np.ndarray):
            yield "array", np.asarray(self.feats, dtype=np.float32)
        else:
            for k, v in self.feats.items():
                v = np.asarray(v, dtype=np.float32)
                if v.ndim != 2:
                    raise Error(f"{self.what}: utterance {k}: expected a 2-D array, got shape {v.shape}")
                yield str(k), v


def _load_labels(labels: Optional[LabelsLike], what: str) -> Optional[Dict[str, np.ndarray]]:
    if labels is None:
        return None
    def ints(key: str, v) -> np.ndarray:
        a = np.asarray(v).reshape(-1)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise Error(f"{what}: utterance {key}: expected integer pdf ids, got {a.dtype}")
        return a

    if isinstance(labels, np.ndarray):
        return {"array": ints("array", labels)}
    if isinstance(labels, Mapping):
        return {str(k): ints(str(k), v) for k, v in labels.items()}
    if not isinstance(labels, str):
        raise Error(f"{what}: expected an alignment rspecifier, a dict or an array")
    import kaldiio
    out: Dict[str, np.ndarray] = {}
    try:
        with kaldiio.ReadHelper(labels) as reader:
            for key, ali in reader:
                a = np.asarray(ali)
                if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                    raise Error(f"{labels}: utterance {key}: expected an integer vector of pdf ids "
                                f"(ali-to-pdf output), got {a.dtype} with shape {a.shape}")
                out[key] = a  # kept as read (int32: 4 bytes per frame in memory)
    except Error:
        raise
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        raise Error(f"{labels}: cannot read labels: {e}") from None
    return out


def _cv_by_hash(key: str, fraction: float) -> bool:
    return zlib.crc32(key.encode("utf-8", "replace")) / 2.0 ** 32 < fraction


class _Data:
    """Feature-transformed utterances with their labels, split into train and CV parts."""

    def __init__(self, train: _Source, cv: Optional[_Source], cv_fraction: float,
                 ft: Optional[Network], input_dim: int, output_dim: int,
                 labels: Optional[Dict[str, np.ndarray]], cv_labels: Optional[Dict[str, np.ndarray]],
                 need_labels: bool) -> None:
        self.train, self.cv, self.cv_fraction = train, cv, cv_fraction
        self.ft, self.input_dim, self.output_dim = ft, input_dim, output_dim
        self.labels, self.cv_labels, self.need_labels = labels, cv_labels, need_labels
        # "hash": whole utterances by key; "tail": the last cv_fraction of every
        # utterance (when hashing leaves either side empty).
        self.split = "cv-feats" if cv is not None else "hash"
        self.keys = {True: 0, False: 0}  # utterances seen on the CV / training side (hash split)
        self.skipped: set = set()     # no usable labels, no teacher: left out
        self.unlabelled: set = set()  # no usable labels, a teacher: trained on soft targets only

    def _prepare(self, key: str, mat: np.ndarray, labels: Optional[Dict[str, np.ndarray]],
                 what: str) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
        if self.ft is not None:
            if mat.shape[1] != self.ft.input_dim:
                raise Error(f"{what}: utterance {key}: features have {mat.shape[1]} dims, the feature "
                            f"transform expects {self.ft.input_dim}")
            mat = self.ft(mat)
        elif mat.shape[1] != self.input_dim:
            raise Error(f"{what}: utterance {key}: features have {mat.shape[1]} dims, the student "
                        f"expects {self.input_dim}")
        lab = None
        if labels is not None:
            ali = labels.get(key)
            if ali is None or abs(len(ali) - len(mat)) > LENGTH_TOLERANCE:
                if self.need_labels:
                    self.skipped.add(key)
                    return None
                self.unlabelled.add(key)
                lab = np.full(len(mat), -1, dtype=np.int32)
            else:
                n = min(len(ali), len(mat))
                mat = mat[:n]
                lo, hi = (int(ali[:n].min()), int(ali[:n].max())) if n else (0, 0)
                if lo < 0 or hi >= self.output_dim:
                    raise Error(f"labels: utterance {key}: pdf id {lo if lo < 0 else hi} is outside the "
                                f"student's {self.output_dim} outputs")
                lab = ali[:n].astype(np.int32)
        return mat, lab

    def _iter(self, part: str) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
        if part == "cv" and self.split == "cv-feats":
            for key, mat in self.cv:
                got = self._prepare(key, mat, self.cv_labels, "cv-feats")
                if got is not None:
                    yield got
            return
        # Hash split: the key decides before anything is read (an scp loads only what it needs).
        # Every pass sees every key: it counts both sides for check_split().
        self.keys = {True: 0, False: 0}
        for key, load in self.train.items():
            if self.split == "hash":
                in_cv = _cv_by_hash(key, self.cv_fraction)
                self.keys[in_cv] += 1
                if in_cv != (part == "cv"):
                    continue
                got = self._prepare(key, load(), self.labels, "features")
            else:
                got = self._prepare(key, load(), self.labels, "features")
                if got is not None:
                    x, lab = got
                    n_cv = int(round(len(x) * self.cv_fraction))
                    cut = len(x) - n_cv
                    got = (x[cut:], None if lab is None else lab[cut:]) if part == "cv" else \
                          (x[:cut], None if lab is None else lab[:cut])
            if got is not None and len(got[0]):
                yield got

    def train_utterances(self):
        return self._iter("train")

    def cv_utterances(self):
        return self._iter("cv")

    def check_split(self) -> bool:
        """After a full pass: falls back to the per-utterance tail split when hashing left
        a side empty. True if it did (the pass must then be run again)."""
        if self.split != "hash" or (self.keys[True] and self.keys[False]):
            return False
        self.split = "tail"
        return True


# -- training ---------------------------------------------------------------

class _Progress:
    """Frames done and frames/s on one self-overwriting stderr line (terminals only)."""

    def __init__(self, enabled: Optional[bool]) -> None:
        self.on = sys.stderr.isatty() if enabled is None else enabled
        self.last = 0.0

    def update(self, what: str, frames: int, t0: float) -> None:
        now = time.perf_counter()
        if self.on and now - self.last > 0.2:
            self.last = now
            fps = frames / max(now - t0, 1e-9)
            sys.stderr.write(f"\r{what}: {frames:,} frames, {fps:,.0f} frames/s   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


class _Diverged(Exception):
    """The training objective blew up in the middle of an epoch."""


#: An epoch is abandoned when the training objective per frame, averaged over the last
#: DIVERGE_WINDOW minibatches, exceeds DIVERGE_FACTOR x the initial CV objective (or is
#: not finite): far beyond minibatch noise, and caught within a few minibatches.
DIVERGE_FACTOR = 10.0
DIVERGE_WINDOW = 4
NO_CV_FRAMES = "no cross-validation frames: check --cv-feats, the labels, or --cv-fraction"
#: How many times the learning rate may be halved on divergence before giving up.
MAX_DIVERGENCES = 10


def _stats_zero() -> Dict[str, float]:
    return {"frames": 0, "objective": 0.0, "kl_t": 0.0, "kl": 0.0, "hard_ce": 0.0, "agree": 0,
            "blocks": 0, "correct": 0, "labelled": 0}


def _accumulate(total: Dict[str, float], s: Dict[str, float]) -> None:
    for k, v in s.items():
        total[k] += v


def _snapshot(comps) -> List[Dict[str, np.ndarray]]:
    return [{k: v.copy() for k, v in c.params.items()} for c in comps]


def _restore(comps, snap: List[Dict[str, np.ndarray]]) -> None:
    for c, params in zip(comps, snap):
        for k, v in c.params.items():
            v[...] = params[k]


def distill(student: ModelLike, feats: FeatsLike, *,
            teachers: Union[ModelLike, Sequence[ModelLike]] = (),
            feature_transform: Optional[ModelLike] = None,
            temperature: float = 2.0,
            labels: Optional[LabelsLike] = None,
            hard_weight: Optional[float] = None,
            average_logits: bool = False,
            optimizer: str = "sgd",
            learn_rate: Optional[float] = None,
            momentum: float = 0.0,
            l2: float = 0.0,
            minibatch_size: int = 256,
            randomizer_size: int = 32768,
            max_epochs: int = 20,
            min_epochs: int = 0,
            keep_lr_epochs: int = 0,
            start_halving_impr: float = 0.01,
            end_halving_impr: float = 0.001,
            halving_factor: float = 0.5,
            cv_feats: Optional[FeatsLike] = None,
            cv_labels: Optional[LabelsLike] = None,
            cv_fraction: float = 0.1,
            seed: int = 777,
            output: Optional[PathOrFile] = None,
            binary: Optional[bool] = None,
            dialect: Optional[str] = None,
            digits: str = "shortest",
            progress: Optional[bool] = None,
            log: Optional[Callable[[str], None]] = None) -> Tuple[Model, DistillReport]:
    """Fine-tune ``student`` on the soft targets of ``teachers`` (and/or on labels).

    Parameters
    ----------
    student : Model or path
        Must end in ``<Softmax>`` or ``<BlockSoftmax>``; its structure (ranks) is
        kept. Components with learn-rate coefficient 0 stay frozen.
    feats : rspecifier, dict of (frames x dims) arrays, or one 2-D array
        Training features (before the feature transform). An rspecifier is read
        once per epoch (stdin cannot be; commands ``ark:cmd |`` are re-run).
    teachers : Model, path, or a list of them
        Their soft targets are averaged (``average_logits``: their logits).
        None: frame-level training on ``labels`` only.
    feature_transform : Model or path, optional
        Run frozen on each utterance before everything else (Kaldi's
        ``--feature-transform``); splicing belongs here, since frames are shuffled.
    temperature : float
        T of the soft targets and of the student's softmax in the soft term.
    labels : alignment rspecifier (pdf ids, ``ali-to-pdf`` output), dict or array
    hard_weight : float
        a in (1 - a) T^2 CE(soft) + a CE(labels). Default: 0 without labels,
        0.1 with labels and teachers, 1 without teachers.
    optimizer : "sgd" or "adam"
        SGD: Kaldi's semantics (gradients summed over the minibatch, per-layer
        learn-rate coefficients, momentum, L2 = Kaldi's l2-penalty, MaxNorm).
        Adam: mean gradients; ``l2`` becomes decoupled weight decay.
    learn_rate : float
        Default: 0.008 for SGD (Kaldi's default; it multiplies gradients summed
        over the minibatch, so it is a per-frame rate), 0.001 for Adam.
    momentum : float
        SGD momentum (default 0, as Kaldi's).
    minibatch_size, randomizer_size : int
        Frames per update, and of the shuffling buffer (as nnet-train-frmshuff).
    max_epochs, min_epochs, keep_lr_epochs, start_halving_impr, end_halving_impr, halving_factor
        The newbob schedule of Kaldi's train_scheduler.sh.
    cv_feats, cv_labels : held-out data. Without ``cv_feats``, ``cv_fraction`` of
        the utterances (chosen by a hash of their keys) are held out; with too few
        utterances for that, the last ``cv_fraction`` of each utterance.
    seed : int
        Shuffling seed (same seed, data and thread count: same model).
    output : path, optional
        Where to write the best student (atomically); encoding and dialect follow
        the student's input unless ``binary``/``dialect`` say otherwise.
    progress : bool, optional
        Progress line on stderr (default: when stderr is a terminal).
        Ctrl-C (KeyboardInterrupt) stops training; the best model of the finished
        epochs is still written to ``output`` before the interrupt propagates.
    log : callable, optional
        Receives the table header and each epoch's row as they complete.

    Returns
    -------
    (Model, DistillReport)
    """
    t_model = _load(student)
    teacher_list = [] if teachers is None else (
        list(teachers) if isinstance(teachers, (list, tuple)) else [teachers])
    if not teacher_list and labels is None:
        raise Error("nothing to learn from: give at least one teacher, or labels")
    if hard_weight is None:
        hard_weight = 1.0 if not teacher_list else (0.1 if labels is not None else 0.0)
    if not 0.0 <= hard_weight <= 1.0:
        raise Error(f"hard weight must be in [0, 1], got {hard_weight}")
    if hard_weight > 0 and labels is None:
        raise Error("a hard weight > 0 needs labels")
    if not temperature > 0 or not math.isfinite(temperature):
        raise Error(f"temperature must be > 0, got {temperature}")
    if optimizer not in ("sgd", "adam"):
        raise Error(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if learn_rate is None:
        learn_rate = 0.008 if optimizer == "sgd" else 0.001
    for name, v, lo in (("minibatch size", minibatch_size, 1), ("randomizer size", randomizer_size, 1),
                        ("max epochs", max_epochs, 0)):
        if int(v) != v or v < lo:
            raise Error(f"{name} must be an integer >= {lo}, got {v}")
    if not learn_rate > 0:
        raise Error(f"learn rate must be > 0, got {learn_rate}")
    if not 0.0 <= momentum < 1.0:
        raise Error(f"momentum must be in [0, 1), got {momentum}")
    if not 0.0 < halving_factor < 1.0:
        raise Error(f"halving factor must be in (0, 1), got {halving_factor}")
    if int(seed) != seed or seed < 0:
        raise Error(f"seed must be a non-negative integer, got {seed}")
    if cv_feats is None and not 0.0 < cv_fraction < 1.0:
        raise Error(f"cv fraction must be in (0, 1), got {cv_fraction}")
    randomizer_size = max(randomizer_size, minibatch_size)

    comps = [c.copy() for c in t_model.components]
    teacher_nets = [Network(t) for t in teacher_list]
    trainer = _core.Trainer([c._c for c in comps], [n._net for n in teacher_nets])
    trainable = [c for c in comps if any(
        (c.coefs.get(tok) or 0) > 0 for tok in ("<LearnRateCoef>", "<BiasLearnRateCoef>",
                                               "<AlphaLearnRateCoef>", "<BetaLearnRateCoef>"))]
    if not trainable:
        raise Error("nothing to train: every learn-rate coefficient of the student is 0")
    ft = Network(feature_transform) if feature_transform is not None else None
    if ft is not None and ft.output_dim != trainer.input_dim:
        raise Error(f"the feature transform outputs {ft.output_dim} dims but the student expects "
                    f"{trainer.input_dim}")

    lab = _load_labels(labels, "labels")
    cv_lab = _load_labels(cv_labels, "cv labels") if cv_labels is not None else lab
    data = _Data(_Source(feats, "features"), _Source(cv_feats, "cv-feats") if cv_feats is not None else None,
                 cv_fraction, ft, trainer.input_dim, trainer.output_dim, lab, cv_lab,
                 need_labels=not teacher_list)

    loss_kw = dict(temperature=float(temperature), hard_weight=float(hard_weight),
                   average_logits=bool(average_logits))
    bar = _Progress(progress)
    emit = log or (lambda s: None)

    def evaluate(allow_empty: bool = False) -> Dict[str, float]:
        total = _stats_zero()
        pending: List[Tuple[np.ndarray, Optional[np.ndarray]]] = []
        n = 0

        def flush() -> None:
            x = np.concatenate([p[0] for p in pending])
            y = None if lab is None and cv_lab is None else np.concatenate(
                [p[1] if p[1] is not None else np.full(len(p[0]), -1, np.int32) for p in pending])
            _accumulate(total, trainer.evaluate(x, y, **loss_kw))
            pending.clear()

        t0 = time.perf_counter()
        for x, y in data.cv_utterances():
            pending.append((x, y))
            n += len(x)
            if n >= 4096:
                flush()
                bar.update("cross-validation", total["frames"], t0)
                n = 0
        if pending:
            flush()
        if total["frames"] == 0 and not allow_empty:
            raise Error(NO_CV_FRAMES)
        return total

    rng_seed = int(seed)

    def train_epoch(epoch: int, lr: float, limit: float) -> Tuple[Dict[str, float], float]:
        rng = np.random.default_rng([rng_seed, epoch])
        total = _stats_zero()
        recent: List[float] = []
        buf_x: List[np.ndarray] = []
        buf_y: List[Optional[np.ndarray]] = []
        n = 0
        opt = dict(learn_rate=float(lr), momentum=float(momentum) if optimizer == "sgd" else 0.0,
                   l2=float(l2), adam=optimizer == "adam", **loss_kw)
        t0 = time.perf_counter()

        def run(final: bool) -> None:
            nonlocal buf_x, buf_y, n
            x = np.concatenate(buf_x) if len(buf_x) > 1 else buf_x[0]
            y = None
            if any(b is not None for b in buf_y):
                y = np.concatenate([b if b is not None else np.full(len(bx), -1, np.int32)
                                    for b, bx in zip(buf_y, buf_x)])
            perm = rng.permutation(len(x))
            nb = len(x) // minibatch_size
            for b in range(nb):
                idx = perm[b * minibatch_size:(b + 1) * minibatch_size]
                st = trainer.train(x[idx], None if y is None else y[idx], **opt)
                _accumulate(total, st)
                recent.append(st["objective"] / max(st["frames"], 1))
                del recent[:-DIVERGE_WINDOW]
                if not math.isfinite(recent[-1]) or (len(recent) == DIVERGE_WINDOW and
                                                     sum(recent) / DIVERGE_WINDOW > limit):
                    raise _Diverged()
                if b % 16 == 0:
                    bar.update(f"epoch {epoch}", total["frames"], t0)
            rest = perm[nb * minibatch_size:]
            buf_x = [] if final or not len(rest) else [x[rest]]
            buf_y = [] if final or not len(rest) else [None if y is None else y[rest]]
            n = sum(len(b) for b in buf_x)

        for x, y in data.train_utterances():
            buf_x.append(x)
            buf_y.append(y)
            n += len(x)
            if n > randomizer_size:
                run(final=False)
        if n:
            run(final=True)  # as Kaldi: a last partial minibatch is dropped
        return total, time.perf_counter() - t0

    def row(epoch: int, lr: float, tr: Optional[Dict[str, float]], cv: Dict[str, float], secs: float,
            accepted: Optional[bool]) -> EpochReport:
        def per(s, key, denom):
            return None if s is None or not s[denom] else s[key] / s[denom]
        return EpochReport(
            epoch=epoch, learn_rate=lr,
            train_objective=per(tr, "objective", "frames"), train_agreement=per(tr, "agree", "blocks"),
            train_accuracy=per(tr, "correct", "labelled"),
            cv_objective=cv["objective"] / cv["frames"],
            cv_kl=per(cv, "kl", "frames") if teacher_list else None,
            cv_agreement=per(cv, "agree", "blocks"), cv_accuracy=per(cv, "correct", "labelled"),
            train_frames=int(tr["frames"]) if tr else 0, seconds=secs, accepted=accepted)

    lr = float(learn_rate)
    cv0 = evaluate(allow_empty=True)  # also sees every key of a hash split
    if data.check_split():
        cv0 = evaluate()
    elif cv0["frames"] == 0:
        raise Error(NO_CV_FRAMES)
    bar.close()
    epochs = [row(0, lr, None, cv0, 0.0, None)]
    emit(_header())
    emit(_row(epochs[0]))
    loss = epochs[0].cv_objective
    best_epoch = 0
    best = _snapshot(comps)
    halving = False
    stopped = f"stopped after max epochs ({max_epochs})"
    if not math.isfinite(loss):
        raise Error(f"the initial cross-validation objective is {loss}: non-finite network outputs "
                    "(check the features and the feature transform)")
    interrupted = False
    limit = DIVERGE_FACTOR * max(loss, 1e-2)
    divergences = 0
    epoch = completed = 0
    try:
        while completed < max_epochs:  # diverged epochs cost a few minibatches and do not count
            epoch += 1
            try:
                tr, secs = train_epoch(epoch, lr, limit)
            except _Diverged:
                # Back to the best model, half the learning rate, and on: the stopping
                # rule does not count this epoch (newbob would read it as convergence).
                bar.close()
                _restore(comps, best)
                trainer.reset_optimizer()
                nan = float("nan")
                epochs.append(EpochReport(epoch, lr, None, None, None, nan, None, None, None, 0, 0.0,
                                          accepted=False, diverged=True))
                emit(_row(epochs[-1]))
                divergences += 1
                if divergences > MAX_DIVERGENCES:
                    raise Error(f"training diverges even at learning rate {lr:g} ({divergences} times "
                                f"from {learn_rate:g}): check the features and the feature transform, "
                                "or lower --learn-rate") from None
                lr *= 0.5
                continue
            completed += 1
            if tr["frames"] == 0:
                raise Error(f"no training frames (minibatch size {minibatch_size}): check the features, "
                            "labels and CV split")
            cv = evaluate()
            bar.close()
            new = cv["objective"] / cv["frames"]
            loss_prev = loss
            accept = (new < loss or completed <= keep_lr_epochs or completed <= min_epochs) and math.isfinite(new)
            if accept:
                loss = new
                best_epoch = epoch
                best = _snapshot(comps)
            else:
                _restore(comps, best)
                trainer.reset_optimizer()
            epochs.append(row(epoch, lr, tr, cv, secs, accept))
            emit(_row(epochs[-1]))
            if completed <= keep_lr_epochs:
                continue
            rel = (loss_prev - loss) / loss_prev if loss_prev > 0 else 0.0
            if loss <= 0.0:
                stopped = "converged: CV objective 0"
                break
            if halving and rel < end_halving_impr:
                if completed <= min_epochs:
                    continue
                stopped = f"converged: relative CV improvement {rel:.2g} < {end_halving_impr:g}"
                break
            if rel < start_halving_impr:
                halving = True
            if halving:
                lr *= halving_factor
    except KeyboardInterrupt:  # keep what the finished epochs achieved
        interrupted = True
        bar.close()
        stopped = f"interrupted in epoch {len(epochs)}"
    _restore(comps, best)

    result = Model(comps, binary=t_model.binary, dialect=t_model.dialect, source=t_model.source)
    report = DistillReport(epochs=epochs, best_epoch=best_epoch, stopped=stopped,
                           temperature=float(temperature), hard_weight=float(hard_weight),
                           teachers=len(teacher_list), cv_frames=int(cv0["frames"]),
                           cv_source={"cv-feats": "--cv-feats", "hash": f"{cv_fraction:g} of the utterances",
                                      "tail": f"last {cv_fraction:g} of each utterance"}[data.split],
                           skipped_utterances=len(data.skipped), unlabelled_utterances=len(data.unlabelled))
    emit(report.summary())
    if output is not None and (best_epoch > 0 or not interrupted):
        write(result, output, binary=t_model.binary if binary is None else binary,
              dialect=t_model.dialect if dialect is None else dialect, digits=digits)
    if interrupted:
        if output is not None:
            emit(f"interrupted: the best model so far (epoch {best_epoch}) was written to {output}"
                 if best_epoch > 0 else f"interrupted before an epoch improved: {output} not written")
        raise KeyboardInterrupt
    return result, report
