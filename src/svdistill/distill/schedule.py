"""The training schedule of :func:`svdistill.distill`, the same for every engine.

Kaldi's ``steps/nnet/train_scheduler.sh``: cross-validation before training and
after every epoch; an epoch that makes the CV objective worse is rejected (back
to the best model); the learning rate follows "newbob" (halve once the relative
CV improvement drops below ``start_halving_impr``, stop when it drops below
``end_halving_impr`` while halving). Added to Kaldi's rules: an epoch whose
training objective blows up is abandoned within a few minibatches, and training
goes on from the best model at half the learning rate.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import Error, option_error
from ..progress import Progress
from .data import Data, concat_labels, minibatches
from .report import EpochReport, _header, _row

#: An epoch is abandoned when the training objective per frame, averaged over the last
#: DIVERGE_WINDOW minibatches, exceeds DIVERGE_FACTOR x the initial CV objective (or is
#: not finite): far beyond minibatch noise, and caught within a few minibatches.
DIVERGE_FACTOR = 10.0
DIVERGE_WINDOW = 4
#: How many times the learning rate may be halved on divergence before giving up.
MAX_DIVERGENCES = 10
#: Cross-validation evaluates at least this many frames per call.
CV_CHUNK = 4096


@dataclasses.dataclass
class ScheduleOptions:
    learn_rate: float
    minibatch_size: int
    randomizer_size: int
    max_epochs: int
    min_epochs: int
    keep_lr_epochs: int
    start_halving_impr: float
    end_halving_impr: float
    halving_factor: float
    seed: int
    has_teachers: bool
    hints: bool = False       # the hint term is on: the table shows it


@dataclasses.dataclass
class Outcome:
    epochs: List[EpochReport]
    best_epoch: int
    stopped: str
    cv_frames: int
    #: What ended training early, the best model of the epochs before it kept: an Error
    #: (training gave up, or the data failed), or an interrupt (KeyboardInterrupt, SystemExit,
    #: any BaseException that is not an Exception: what a signal handler raises), to re-raise.
    error: Optional[Error] = None
    interrupted: Optional[BaseException] = None


class _Diverged(Exception):
    """The training objective blew up in the middle of an epoch (``nonfinite``: to nan or inf)."""

    def __init__(self, nonfinite: bool) -> None:
        super().__init__()
        self.nonfinite = nonfinite


def _frames(engine, data: Data, part: str, epoch: int = 0):
    """(x, labels) of each utterance of ``part``, feature-transformed by the engine."""
    utterances = data.utterances(part, epoch)
    try:
        for _key, host, lab, n, part_slice in utterances:
            x = engine.prepare(host)
            if n != engine.length(x):
                x = x[:n]
            yield x[part_slice], None if lab is None else lab[part_slice]
    finally:
        utterances.close()  # stops the reading thread (and its command) now, not when collected


def _find_nonfinite(engine, data: Data, part: str, epoch: int) -> Optional[Error]:
    """The first utterance of ``part`` on which the features, the feature transform, a teacher
    or the student (its current parameters) give a value that is not finite, as an Error
    naming it; None when every value is finite (then only training can have made one)."""
    source = data.cv if part == "cv" and data.split == "cv-feats" else data.train
    assert source is not None  # cv-feats sets data.cv
    utterances = data.utterances(part, epoch)
    try:
        for key, host, _lab, n, part_slice in utterances:
            found = engine.first_nonfinite(host, n, part_slice)
            if found is not None:
                stage, frame, value = found
                return Error(f"{source.what} {source.name}: utterance {key}, frame {frame}: {stage} {value} "
                             "(training cannot use non-finite values: check the features, the feature "
                             "transform and the models)")
    finally:
        utterances.close()
    return None


@dataclasses.dataclass
class State:
    """Where the schedule stands between epochs: what a checkpoint saves besides parameters."""

    epochs: List[EpochReport]
    lr: float
    loss: float               # the best CV objective so far
    limit: float              # the divergence threshold (from the initial CV objective)
    cv_frames: int = 0
    best_epoch: int = 0
    epoch: int = 0            # epochs started, diverged ones included
    completed: int = 0        # epochs that count for the schedule
    halving: bool = False
    divergences: int = 0
    stopped: str = ""
    done: bool = False        # converged: a resumed run goes straight to the output

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["epochs"] = [dataclasses.asdict(e) for e in self.epochs]
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "State":
        d = dict(d)
        d["epochs"] = [EpochReport(**e) for e in d["epochs"]]
        return cls(**d)


@dataclasses.dataclass
class Position:
    """Inside an epoch: minibatches done, and what the epoch had summed up by then."""

    batches: int
    stats: Dict[str, float]
    recent: List[float]
    seconds: float
    wait: float


def run(engine, data: Data, o: ScheduleOptions, bar: Progress, emit: Callable[[str], None],
        checkpoints=None, resume: bool = False, checkpoint_every: int = 0) -> Outcome:
    """Train ``engine``'s student on ``data`` until the schedule stops; the engine ends
    holding the best model's parameters. With ``checkpoints``, the state is saved
    after every epoch (and every ``checkpoint_every`` training frames); ``resume``
    starts from the newest checkpoint."""

    def evaluate(allow_empty: bool = False) -> Dict[str, float]:
        total = engine.zero_stats()
        pending: List[Tuple[Any, Optional[np.ndarray]]] = []
        n = done = 0

        def flush() -> None:
            xs, ys = [p[0] for p in pending], [p[1] for p in pending]
            y = concat_labels(engine, xs, ys)
            engine.add(total, engine.evaluate(engine.concat(xs), None if y is None else engine.labels(y)))
            pending.clear()

        bar.start("cross-validation")
        frames = _frames(engine, data, "cv")
        try:
            for x, y in frames:
                pending.append((x, y))
                n += engine.length(x)
                if n >= CV_CHUNK:
                    flush()
                    done += n
                    bar.update(done)
                    n = 0
        finally:
            frames.close()
        if pending:
            flush()
        result = engine.read(engine.reduce(total))
        if result["frames"] == 0 and not allow_empty:
            raise data.empty("cv")
        return result

    def save(st: State, best, pos: Optional[Position]) -> None:
        if checkpoints is None or not checkpoints.writer:
            return
        meta = {"state": st.to_json(), "split": data.split,
                "position": None if pos is None else dataclasses.asdict(pos)}
        # Named by (epoch under way, minibatches done in it): names sort in the order written.
        checkpoints.save(meta, engine.state_arrays(best), st.epoch + 1, 0 if pos is None else pos.batches)

    def train_epoch(st: State, best, pos: Optional[Position]) -> Tuple[Dict[str, float], float, float]:
        epoch, lr = st.epoch + 1, st.lr  # the epoch under way
        # Seeded by (seed, epoch): a resumed epoch shuffles as it did; each rank its own shard.
        rng = np.random.default_rng([o.seed, epoch] + ([data.rank] if data.world > 1 else []))
        total = engine.zero_stats()
        recent: deque = deque(pos.recent if pos else (), maxlen=DIVERGE_WINDOW)
        pending: List[Any] = []  # statistics not yet read back (engines with check_every > 1)
        skip = pos.batches if pos else 0
        step_frames = o.minibatch_size * engine.world
        secs0, wait0 = (pos.seconds, pos.wait) if pos else (0.0, 0.0)
        next_save = skip * step_frames + checkpoint_every if checkpoint_every else None
        def check(pending: List[Any]) -> None:
            """Reads back the minibatches' objectives: any not finite, or the last
            DIVERGE_WINDOW above the limit on average, abandon the epoch."""
            if not pending:
                return
            values = engine.objectives(pending)
            pending.clear()
            recent.extend(values)
            if not all(math.isfinite(v) for v in values):
                raise _Diverged(nonfinite=True)
            if len(recent) == DIVERGE_WINDOW and sum(recent) / DIVERGE_WINDOW > st.limit:
                raise _Diverged(nonfinite=False)

        bar.start(f"epoch {epoch}")
        t0 = time.perf_counter()
        frames = _frames(engine, data, "train", epoch)
        try:
            batches = minibatches(engine, frames, o.minibatch_size, o.randomizer_size, rng)
            for b, st_b, _ in engine.steps(batches, lr, skip):
                engine.add(total, st_b)
                pending.append(st_b)
                done = (b + 1) * step_frames  # over all ranks
                if len(pending) >= engine.check_every:
                    check(pending)
                if b % 16 == 0:
                    bar.update(done)
                if next_save is not None and done >= next_save:
                    check(pending)
                    so_far = engine.read(total)
                    if pos:
                        so_far = {k: so_far[k] + pos.stats.get(k, 0) for k in so_far}
                    save(st, best, Position(batches=b + 1, stats=so_far, recent=list(recent),
                                            seconds=secs0 + time.perf_counter() - t0, wait=wait0 + data.wait))
                    next_save = done + checkpoint_every
        finally:
            frames.close()
        result = engine.read(total)
        if pos:
            result = {k: result[k] + pos.stats.get(k, 0) for k in result}  # .get: a checkpoint before "hint"
        if engine.check_every > 1 and result["frames"] and not math.isfinite(result["objective"]):
            raise _Diverged(nonfinite=True)
        return result, secs0 + time.perf_counter() - t0, wait0 + data.wait

    def row(epoch: int, lr: float, tr: Optional[Dict[str, float]], cv: Dict[str, float], secs: float,
            wait: float, accepted: Optional[bool]) -> EpochReport:
        def per(s, key, denom):
            return None if s is None or not s[denom] else s[key] / s[denom]
        return EpochReport(
            epoch=epoch, learn_rate=lr,
            train_objective=per(tr, "objective", "frames"), train_agreement=per(tr, "agree", "blocks"),
            train_accuracy=per(tr, "correct", "labelled"),
            cv_objective=cv["objective"] / cv["frames"],
            cv_kl=per(cv, "kl", "frames") if o.has_teachers else None,
            cv_agreement=per(cv, "agree", "blocks"), cv_accuracy=per(cv, "correct", "labelled"),
            train_frames=int(tr["frames"]) if tr else 0, seconds=secs, accepted=accepted,
            data_wait=wait, train_hint=per(tr, "hint", "frames") if o.hints else None,
            cv_hint=per(cv, "hint", "frames") if o.hints else None)

    pos: Optional[Position] = None
    if resume:
        meta, arrays, path = checkpoints.load_newest()
        try:
            best = engine.load_state_arrays(arrays)
            st = State.from_json(meta["state"])
            data.split = meta["split"]
            pos = Position(**meta["position"]) if meta["position"] else None
        except (KeyError, TypeError, ValueError, Error) as e:
            raise Error(f"{path}: the checkpoint does not fit this student ({e})") from None
        for problem in meta.get("skipped", []):
            emit(f"skipped {problem}")
        emit(f"resuming from {path}" + (f" ({pos.batches} minibatches into epoch {st.epoch + 1})" if pos else ""))
        emit(_header(o.hints))
        for ep in st.epochs:
            emit(_row(ep, o.hints))
    else:
        cv0 = evaluate(allow_empty=True)  # also sees every key of a hash split
        if data.check_split():
            cv0 = evaluate()
        elif cv0["frames"] == 0:
            raise data.empty("cv")
        bar.close()
        first = row(0, float(o.learn_rate), None, cv0, 0.0, 0.0, None)
        emit(_header(o.hints))
        emit(_row(first, o.hints))
        if not math.isfinite(first.cv_objective):
            raise _find_nonfinite(engine, data, "cv", 0) or Error(
                f"the initial cross-validation objective is {first.cv_objective}, although the features, the "
                "feature transform, the teachers and the student give finite values on every cross-validation "
                f"frame: the loss overflows (temperature {engine.opts.loss.temperature:g})")
        st = State(epochs=[first], lr=float(o.learn_rate), loss=first.cv_objective,
                   limit=DIVERGE_FACTOR * max(first.cv_objective, 1e-2), cv_frames=int(cv0["frames"]),
                   stopped=f"stopped after max epochs ({o.max_epochs})")
        best = engine.snapshot()
        save(st, best, None)
    if not st.done:  # a run stopped by --max-epochs may resume with a larger one
        st.stopped = (f"stopped after max epochs ({o.max_epochs})" if st.completed <= o.max_epochs else
                      f"stopped: the checkpoint had {st.completed} epochs, more than max epochs ({o.max_epochs})")
    error: Optional[Error] = None
    interrupted: Optional[BaseException] = None
    data_checked = False  # whether a non-finite objective has been traced to the data (once per run)
    under_way = st.epoch + 1
    try:
        while not st.done and st.completed < o.max_epochs:  # diverged epochs do not count
            under_way = st.epoch + 1
            try:
                tr, secs, wait = train_epoch(st, best, pos)
            except _Diverged as d:
                # Back to the best model, half the learning rate, and on: the stopping
                # rule does not count this epoch (newbob would read it as convergence).
                bar.close()
                engine.restore(best)
                engine.reset_optimizer()
                if d.nonfinite and not data_checked:
                    # A nan or inf that the data, the feature transform or a teacher makes is
                    # no divergence: no learning rate helps. Say where it is, once.
                    data_checked = True
                    found = _find_nonfinite(engine, data, "train", under_way)
                    if found is not None:
                        raise found
                nan = float("nan")
                st.epoch += 1
                st.epochs.append(EpochReport(st.epoch, st.lr, None, None, None, nan, None, None, None, 0, 0.0,
                                             accepted=False, diverged=True))
                emit(_row(st.epochs[-1], o.hints))
                st.divergences += 1
                if st.divergences > MAX_DIVERGENCES:
                    raise option_error("learn_rate", f"{o.learn_rate:g} is too large: training diverges even at "
                                       f"{st.lr:g} ({st.divergences} times, halved each time); give a smaller "
                                       "one, or check the scale of the features the student sees") from None
                st.lr *= 0.5
                pos = None
                save(st, best, None)
                continue
            pos = None
            st.epoch += 1
            st.completed += 1
            if tr["frames"] == 0:
                raise _no_training_frames(data, o, engine.world)
            cv = evaluate()
            bar.close()
            new = cv["objective"] / cv["frames"]
            loss_prev = st.loss
            accept = (new < st.loss or st.completed <= o.keep_lr_epochs or st.completed <= o.min_epochs) \
                and math.isfinite(new)
            if accept:
                st.loss = new
                st.best_epoch = st.epoch
                best = engine.snapshot()
            else:
                engine.restore(best)
                engine.reset_optimizer()
            st.epochs.append(row(st.epoch, st.lr, tr, cv, secs, wait, accept))
            _newbob(st, o, loss_prev)
            save(st, best, None)
            emit(_row(st.epochs[-1], o.hints))
    except Error as e:  # training gave up, or the data failed: the finished epochs still count
        bar.close()
        error = e
        st.stopped = f"stopped early in epoch {under_way}: {e}"
    except Exception:  # a bug: as it is
        raise
    except BaseException as e:  # Ctrl-C, or a signal made an exception: keep what the finished epochs achieved
        bar.close()
        interrupted = e
        st.stopped = f"interrupted in epoch {under_way}"
    engine.restore(best)
    return Outcome(epochs=st.epochs, best_epoch=st.best_epoch, stopped=st.stopped, cv_frames=st.cv_frames,
                   error=error, interrupted=interrupted)


def _no_training_frames(data: Data, o: ScheduleOptions, world: int) -> Error:
    """Why an epoch trained no minibatch."""
    count = data.passes.get("train")
    if count is not None and count.frames > 0:
        # As nnet-train-frmshuff (its randomizer is Done() once fewer than a minibatch of
        # frames are left), an incomplete last minibatch is dropped.
        return option_error("minibatch_size", f"is {o.minibatch_size}, more than the {count.frames:,} training "
                            f"frames{' of this rank' if world > 1 else ''}: no complete minibatch to train on "
                            "(an incomplete last minibatch is dropped, as nnet-train-frmshuff does); give a "
                            "smaller one, or more data")
    return data.empty("train")


def _newbob(st: State, o: ScheduleOptions, loss_prev: float) -> None:
    """After an epoch: the learning rate for the next, or the end of training (st.done)."""
    if st.completed <= o.keep_lr_epochs:
        return
    rel = (loss_prev - st.loss) / loss_prev if loss_prev > 0 else 0.0
    if st.loss <= 0.0:
        st.stopped, st.done = "converged: CV objective 0", True
        return
    if st.halving and rel < o.end_halving_impr:
        if st.completed <= o.min_epochs:
            return
        st.stopped, st.done = f"converged: relative CV improvement {rel:.2g} < {o.end_halving_impr:g}", True
        return
    if rel < o.start_halving_impr:
        st.halving = True
    if st.halving:
        st.lr *= o.halving_factor
