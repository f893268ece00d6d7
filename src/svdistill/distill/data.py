"""The data side of distillation, shared by every engine.

Utterances come from an rspecifier, a dict or one array (:class:`Source`),
with their labels (:func:`load_labels`); :class:`Data` splits them into a
training and a cross-validation part and yields them in file order, read ahead
on a background thread; :func:`minibatches` shuffles training frames through a
bounded buffer into minibatches (Kaldi's nnet-train-frmshuff randomizer).
The feature transform and the arrays themselves belong to the engine (numpy on
the CPU for the core engine, tensors on the device for torch): this module
only decides which frames go where, and in what order.
"""
from __future__ import annotations

import queue
import threading
import time
import zlib
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from ..archive import OpenInputs, ScpTable, check_finite, parse_rspecifier, read_table
from ..errors import Error, option_error
from .distributed import shard_of
from .report import LENGTH_TOLERANCE

FeatsLike = Union[str, Mapping[str, np.ndarray], np.ndarray]
LabelsLike = Union[str, Mapping[str, np.ndarray], np.ndarray]


def _is_stdin(rspecifier: str) -> bool:
    spec = rspecifier.split(":", 1)[1] if ":" in rspecifier else rspecifier
    return spec.strip() == "-"


class Source:
    """Utterances (key, frames x dims float32) from an rspecifier, a dict or one array.

    Re-iterable (each pass reads the table again), so stdin is refused unless
    ``reread=False`` (one pass: compare). Tables are read by
    :mod:`svdistill.archive` (faults, failing commands and NaN/inf are errors
    naming the table, utterance and byte); arrays are checked the same way.
    """

    def __init__(self, feats: FeatsLike, what: str, *, reread: bool = True) -> None:
        self.what = what
        if isinstance(feats, str):
            parse_rspecifier(feats)
            if reread and _is_stdin(feats):
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
            raise Error(f"{what}: expected a Kaldi rspecifier ('ark:FILE', 'scp:FILE', 'ark:COMMAND |'), "
                        f"a dict of arrays or a 2-D array, got {type(feats).__name__}")
        self.feats = feats

    def _scp(self) -> bool:
        """Whether the features are an ``scp:`` rspecifier (entries loaded one by one)."""
        return isinstance(self.feats, str) and parse_rspecifier(self.feats).kind == "scp"

    def items(self, inputs: Optional[OpenInputs] = None) -> Iterator[Tuple[str, Callable[[], np.ndarray]]]:
        """(key, load) pairs: from an scp, a matrix is read only when load() is called.
        ``inputs``: where open files and commands are registered (to stop a blocked reader)."""
        if not self._scp() or parse_rspecifier(self.feats).permissive:  # type: ignore[arg-type]
            # (scp,p: entries that cannot be read are skipped, which only reading them tells)
            for k, v in self.read(inputs):
                yield k, (lambda v=v: v)  # type: ignore[misc]
            return
        table = ScpTable(self.feats, inputs=inputs)  # type: ignore[arg-type]
        try:
            for i, k in enumerate(table.keys):
                yield k, (lambda i=i: table.load(i))  # type: ignore[misc]
        finally:
            table.close()

    def __iter__(self) -> Generator[Tuple[str, np.ndarray], None, None]:
        return self.read()

    def read(self, inputs: Optional[OpenInputs] = None) -> Generator[Tuple[str, np.ndarray], None, None]:
        """The utterances; ``inputs`` as for items()."""
        if isinstance(self.feats, str):
            yield from read_table(self.feats, inputs=inputs)
        elif isinstance(self.feats, np.ndarray):
            v = np.asarray(self.feats, dtype=np.float32)
            check_finite(v, f"{self.what}: the array")
            yield "array", v
        else:
            for k, v in self.feats.items():
                try:
                    v = np.asarray(v, dtype=np.float32)
                except (TypeError, ValueError) as e:
                    raise Error(f"{self.what}: utterance {k}: expected a 2-D array of numbers: {e}") from None
                if v.ndim != 2:
                    raise Error(f"{self.what}: utterance {k}: expected a 2-D array, got shape {v.shape}")
                check_finite(v, f"{self.what}: utterance {k}")
                yield str(k), v


def load_labels(labels: Optional[LabelsLike], what: str) -> Optional[Dict[str, np.ndarray]]:
    """Alignments (pdf ids per frame) by key: an rspecifier of integer vectors (ali-to-pdf
    output, binary or text), a dict or one array."""
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
        raise Error(f"{what}: expected an alignment rspecifier ('ark:FILE', 'scp:FILE', 'ark:COMMAND |'), "
                    f"a dict or an array, got {type(labels).__name__}")
    # kept as read (int32: 4 bytes per frame in memory)
    return dict(read_table(labels, kind="ints"))


def cv_by_hash(key: str, fraction: float) -> bool:
    return zlib.crc32(key.encode("utf-8", "replace")) / 2.0 ** 32 < fraction


def concat_labels(engine, xs: List[Any], ys: List[Optional[np.ndarray]]) -> Optional[np.ndarray]:
    """The labels of the frames ``engine.concat(xs)`` holds: -1 for the frames of a part
    without labels; None when no part has any."""
    if all(y is None for y in ys):
        return None
    return np.concatenate([y if y is not None else np.full(engine.length(x), -1, np.int32)
                           for x, y in zip(xs, ys)])


class PassCount:
    """What one pass over a part read: utterances in the source, on this side (and rank),
    left out for want of usable labels (and why), and the frames handed on."""

    def __init__(self) -> None:
        self.source = self.read = self.skipped = self.no_alignment = self.bad_length = self.frames = 0
        self.longest = 0


# One utterance as the reader hands it over: key, raw features (as the engine's
# host() made them), labels (trimmed to the usable frames, or None), the number
# of frames kept, and the slice of those that belongs to this part.
Utterance = Tuple[str, Any, Optional[np.ndarray], int, slice]


class Data:
    """Utterances with their labels, split into train and CV parts.

    ``host`` turns a raw (frames x dims) float32 array into what the engine's
    ``prepare`` takes (for CUDA: a tensor in pinned memory); it runs on the
    reading thread.
    """

    def __init__(self, train: Source, cv: Optional[Source], cv_fraction: float, input_dim: int,
                 ft_input_dim: Optional[int], output_dim: int,
                 labels: Optional[Dict[str, np.ndarray]], cv_labels: Optional[Dict[str, np.ndarray]],
                 need_labels: bool, host: Callable[[np.ndarray], Any] = lambda a: a,
                 read_ahead: int = 32, rank: int = 0, world: int = 1) -> None:
        self.train, self.cv, self.cv_fraction = train, cv, cv_fraction
        self.input_dim, self.ft_input_dim, self.output_dim = input_dim, ft_input_dim, output_dim
        self.labels, self.cv_labels, self.need_labels = labels, cv_labels, need_labels
        self.host, self.read_ahead = host, read_ahead
        self.rank, self.world = rank, world
        # "hash": whole utterances by key; "tail": the last cv_fraction of every
        # utterance (when hashing leaves either side empty).
        self.split = "cv-feats" if cv is not None else "hash"
        self.keys = {True: 0, False: 0}  # utterances seen on the CV / training side (hash split)
        self.skipped: set = set()     # no usable labels, no teacher: left out
        self.unlabelled: set = set()  # no usable labels, a teacher: trained on soft targets only
        self.wait = 0.0               # seconds the consumer waited for the reader, this pass
        # Why labels were unusable (skipped or unlabelled), with one example of each, for messages.
        self.no_alignment: Dict[str, str] = {}          # "labels"/"cv labels" -> an utterance without one
        self.bad_length: Dict[str, Tuple[str, int, int]] = {}  # -> (utterance, labels, frames)
        # The latest pass over each part: what an empty part is explained with.
        self.passes: Dict[str, PassCount] = {}
        # Utterances in the first complete pass over each source: a source read again (every
        # epoch) must give them again; stdin, or a command that reads it, gives nothing the second time.
        self.first_count: Dict[str, int] = {}

    def _check(self, key: str, mat: np.ndarray, labels: Optional[Dict[str, np.ndarray]],
               what: str, count: "PassCount") -> Optional[Tuple[Optional[np.ndarray], int]]:
        """(labels trimmed to the usable frames or None, frames kept); None: skip the utterance."""
        want, who = ((self.ft_input_dim, "the feature transform expects") if self.ft_input_dim is not None
                     else (self.input_dim, "the student expects"))
        if mat.shape[1] != want:
            raise Error(f"{what}: utterance {key}: features have {mat.shape[1]} dims, {who} {want}")
        n = len(mat)
        if labels is None:
            return None, n
        ali = labels.get(key)
        if ali is None or abs(len(ali) - n) > LENGTH_TOLERANCE:
            which = "labels" if labels is self.labels else "cv labels"
            if ali is None:
                count.no_alignment += 1
                self.no_alignment.setdefault(which, key)
            else:
                count.bad_length += 1
                self.bad_length.setdefault(which, (key, len(ali), n))
            if self.need_labels:
                count.skipped += 1
                self.skipped.add(key)
                return None
            self.unlabelled.add(key)
            return np.full(n, -1, dtype=np.int32), n
        n = min(len(ali), n)
        lo, hi = (int(ali[:n].min()), int(ali[:n].max())) if n else (0, 0)
        if lo < 0 or hi >= self.output_dim:
            raise Error(f"labels: utterance {key}: pdf id {lo if lo < 0 else hi} is outside the "
                        f"student's {self.output_dim} outputs")
        return ali[:n].astype(np.int32), n

    def _mine(self, key: str, part: str, epoch: int) -> bool:
        """With several ranks: whether this rank reads ``key`` (training: a new shard every epoch)."""
        return self.world == 1 or shard_of(key, epoch if part == "train" else 0, self.world) == self.rank

    def _raw(self, part: str, epoch: int, inputs: OpenInputs) -> Iterator[Utterance]:
        count = self.passes[part] = PassCount()
        if part == "cv" and self.split == "cv-feats":
            assert self.cv is not None  # the cv-feats split is chosen when cv_feats are given
            for key, mat in self.cv.read(inputs):
                count.source += 1
                if not self._mine(key, part, epoch):
                    continue
                count.read += 1
                got = self._check(key, mat, self.cv_labels, "cv-feats", count)
                if got is not None and got[1]:
                    count.frames += got[1]
                    yield key, self.host(mat), got[0], got[1], slice(0, got[1])
            self._same_as_first("cv", self.cv, count.source, epoch)
            return
        # Hash split: the key decides before anything is read (an scp loads only what it needs).
        # Every pass sees every key: it counts both sides for check_split().
        self.keys = {True: 0, False: 0}
        for key, load in self.train.items(inputs):
            count.source += 1
            if self.split == "hash":
                in_cv = cv_by_hash(key, self.cv_fraction)
                self.keys[in_cv] += 1
                if in_cv != (part == "cv"):
                    continue
            if not self._mine(key, part, epoch):
                continue
            count.read += 1
            mat = load()
            got = self._check(key, mat, self.labels, "features", count)
            if got is None:
                continue
            lab, n = got
            count.longest = max(count.longest, n)
            part_slice = slice(0, n)
            if self.split == "tail":
                cut = n - int(round(n * self.cv_fraction))
                part_slice = slice(cut, n) if part == "cv" else slice(0, cut)
            if part_slice.stop > part_slice.start:
                count.frames += part_slice.stop - part_slice.start
                yield key, self.host(mat), lab, n, part_slice
        self._same_as_first("train", self.train, count.source, epoch)

    def _same_as_first(self, which: str, source: Source, n: int, epoch: int) -> None:
        """After a complete pass over ``source``: it must give as many utterances as the first."""
        first = self.first_count.setdefault(which, n)
        if n != first:
            raise Error(f"{source.what} {source.name}: {first} utterances when first read, {n} when read "
                        f"again{f' for epoch {epoch}' if epoch else ''}: distill reads its data once per epoch, "
                        "so it must give the same utterances each time (stdin, or a command reading it, "
                        "cannot be read twice)")

    def empty(self, part: str) -> Error:
        """The error for a pass over ``part`` that gave no frames: what was read, and what was
        left out and why."""
        cv_feats = part == "cv" and self.split == "cv-feats"
        source = self.cv if cv_feats else self.train
        assert source is not None
        name = f"{source.what} {source.name}"
        what = "cross-validation" if part == "cv" else "training"
        c = self.passes.get(part, PassCount())
        if c.source == 0:
            return Error(f"no {what} frames: {name} holds no utterances")
        if c.read == 0:
            return Error(f"no {what} frames: none of the {c.source} utterances of {name} is on the {what} side")
        if c.skipped:
            labels = self.cv_labels if cv_feats else self.labels
            which = "labels" if labels is self.labels else "cv labels"
            why = []
            if which in self.no_alignment:
                some = ", ".join(repr(k) for k in list(labels or {})[:3])
                why.append(f"{c.no_alignment} have no alignment of the same key (utterance "
                           f"{self.no_alignment[which]!r} has none; the {which} have "
                           f"{f'keys such as {some}' if some else 'no utterances'})")
            if which in self.bad_length:
                key, n_ali, n = self.bad_length[which]
                why.append(f"{c.bad_length} have alignments more than {LENGTH_TOLERANCE} frames longer or "
                           f"shorter than the features (utterance {key!r}: {n_ali} labels, {n} frames)")
            if c.skipped == c.read:
                return Error(f"no {what} frames: none of the {c.read} {what} utterances of {name} has usable "
                             f"{which} (needed without a teacher): " + "; ".join(why))
        if self.split == "tail":
            return option_error("cv_fraction", f"{self.cv_fraction:g} leaves no {what} frames: too few utterances "
                                "to hold out whole ones, so that fraction of the end of each is held out, and "
                                f"that rounds to nothing for all {c.read - c.skipped} (at most {c.longest} "
                                "frames each); give more utterances, another fraction, or {cv_feats}",
                                others=["cv_feats"])
        return Error(f"no {what} frames: the {c.read} {what} utterances of {name} give {c.frames} frames"
                     + (f" ({c.skipped} skipped without usable labels)" if c.skipped else ""))

    def utterances(self, part: str, epoch: int = 0) -> Generator[Utterance, None, None]:
        """The ``part`` ("train" or "cv") in file order, read ahead on a background thread
        (this rank's shard of it, with several ranks)."""
        self.wait = 0.0
        inputs = OpenInputs()
        return _read_ahead(self._raw(part, epoch, inputs), self.read_ahead, self, inputs)

    def check_split(self) -> bool:
        """After a full pass: falls back to the per-utterance tail split when hashing left
        a side empty. True if it did (the pass must then be run again)."""
        if self.split != "hash" or (self.keys[True] and self.keys[False]):
            return False
        self.split = "tail"
        return True


#: Seconds a consumer that stops early waits for the reading thread to end. The input
#: commands are killed first, so a reader blocked on a pipe ends at once; one blocked on a
#: stalled file (a hung NFS server) is left behind (a daemon thread), and the consumer goes on
#: to what stopping requires (writing the best model) instead of hanging with it.
READER_JOIN_TIMEOUT = 5.0


def _read_ahead(items: Iterator[Utterance], depth: int, owner: Data,
                inputs: Optional[OpenInputs] = None) -> Generator[Utterance, None, None]:
    """``items`` produced on a background thread, at most ``depth`` ahead of the consumer.

    Errors raised while reading surface here, in the consumer, as they were
    raised; a consumer that stops early (an error, Ctrl-C, SIGTERM) stops the
    reader: ``inputs`` (what ``items`` reads) are closed, which kills the input
    commands. ``owner.wait`` accumulates the time spent waiting for the next item.
    """
    if depth <= 0:
        yield from items
        return
    q: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    t = threading.Thread(target=work, name="svdistill-read-ahead", daemon=True)
    t.start()
    try:
        while True:
            t0 = time.perf_counter()
            kind, value = q.get()
            owner.wait += time.perf_counter() - t0
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        if inputs is not None and t.is_alive():
            inputs.close()
        t.join(READER_JOIN_TIMEOUT)


def minibatches(engine, utterances: Iterable[Tuple[Any, Optional[Any]]], minibatch_size: int,
                randomizer_size: int, rng: np.random.Generator) -> Iterator[Tuple[Any, Optional[Any], int]]:
    """Kaldi's frame randomizer: (x, labels, frames) minibatches of exactly ``minibatch_size``.

    Frames of successive utterances fill a buffer; once it holds more than
    ``randomizer_size`` frames it is shuffled (``rng``) and cut into minibatches,
    and what is left over stays for the next fill. As in nnet-train-frmshuff, a
    last partial minibatch is dropped. Arrays are the engine's (``concat`` and
    ``take``); labels stay numpy until the shuffled buffer is handed over.
    """
    buf_x: List[Any] = []
    buf_y: List[Optional[np.ndarray]] = []
    n = 0

    def run(final: bool) -> Iterator[Tuple[Any, Optional[Any], int]]:
        nonlocal buf_x, buf_y, n
        y = concat_labels(engine, buf_x, buf_y)
        x = engine.concat(buf_x)
        total = engine.length(x)
        perm = rng.permutation(total)
        nb = total // minibatch_size
        xs = engine.take(x, perm)
        ys = None if y is None else engine.labels(y[perm])
        for b in range(nb):
            lo, hi = b * minibatch_size, (b + 1) * minibatch_size
            yield xs[lo:hi], None if ys is None else ys[lo:hi], minibatch_size
        rest = nb * minibatch_size
        keep = not final and rest < total
        buf_x = [xs[rest:]] if keep else []
        buf_y = [None if y is None else y[perm[rest:]]] if keep else []
        n = total - rest if keep else 0

    for x, y in utterances:
        buf_x.append(x)
        buf_y.append(y)
        n += engine.length(x)
        if n > randomizer_size:
            yield from run(final=False)
    if n:
        yield from run(final=True)
