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

from ..errors import Error
from .data import Data, minibatches
from .report import EpochReport, _header, _Progress, _row

#: An epoch is abandoned when the training objective per frame, averaged over the last
#: DIVERGE_WINDOW minibatches, exceeds DIVERGE_FACTOR x the initial CV objective (or is
#: not finite): far beyond minibatch noise, and caught within a few minibatches.
DIVERGE_FACTOR = 10.0
DIVERGE_WINDOW = 4
NO_CV_FRAMES = "no cross-validation frames: check --cv-feats, the labels, or --cv-fraction"
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


@dataclasses.dataclass
class Outcome:
    epochs: List[EpochReport]
    best_epoch: int
    stopped: str
    interrupted: bool
    cv_frames: int


class _Diverged(Exception):
    """The training objective blew up in the middle of an epoch."""


def _frames(engine, data: Data, part: str):
    """(x, labels) of each utterance of ``part``, feature-transformed by the engine."""
    for _key, host, lab, n, part_slice in data.utterances(part):
        x = engine.prepare(host)
        if n != engine.length(x):
            x = x[:n]
        yield x[part_slice], None if lab is None else lab[part_slice]


def run(engine, data: Data, o: ScheduleOptions, bar: _Progress, emit: Callable[[str], None]) -> Outcome:
    """Train ``engine``'s student on ``data`` until the schedule stops; the engine ends
    holding the best model's parameters."""

    def evaluate(allow_empty: bool = False) -> Dict[str, float]:
        total = engine.zero_stats()
        pending: List[Tuple[Any, Optional[np.ndarray]]] = []
        n = done = 0

        def flush() -> None:
            x = engine.concat([p[0] for p in pending])
            y = None
            if any(p[1] is not None for p in pending):
                y = engine.labels(np.concatenate([p[1] if p[1] is not None else
                                                  np.full(engine.length(p[0]), -1, np.int32) for p in pending]))
            engine.add(total, engine.evaluate(x, y))
            pending.clear()

        t0 = time.perf_counter()
        for x, y in _frames(engine, data, "cv"):
            pending.append((x, y))
            n += engine.length(x)
            if n >= CV_CHUNK:
                flush()
                done += n
                bar.update("cross-validation", done, t0)
                n = 0
        if pending:
            flush()
        result = engine.read(total)
        if result["frames"] == 0 and not allow_empty:
            raise Error(NO_CV_FRAMES)
        return result

    def train_epoch(epoch: int, lr: float, limit: float) -> Tuple[Dict[str, float], float, float]:
        rng = np.random.default_rng([o.seed, epoch])
        total = engine.zero_stats()
        recent: deque = deque(maxlen=DIVERGE_WINDOW)
        done = 0
        t0 = time.perf_counter()
        batches = minibatches(engine, _frames(engine, data, "train"), o.minibatch_size, o.randomizer_size, rng)
        for b, (x, y, frames) in enumerate(batches):
            st = engine.train(x, y, lr)
            engine.add(total, st)
            recent.append(st)
            done += frames
            if (b + 1) % engine.check_every == 0:
                objs = engine.objectives(list(recent))
                if not math.isfinite(objs[-1]) or (len(objs) == DIVERGE_WINDOW and
                                                   sum(objs) / DIVERGE_WINDOW > limit):
                    raise _Diverged()
            if b % 16 == 0:
                bar.update(f"epoch {epoch}", done, t0)
        result = engine.read(total)
        if engine.check_every > 1 and result["frames"] and not math.isfinite(result["objective"]):
            raise _Diverged()
        return result, time.perf_counter() - t0, data.wait

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
            data_wait=wait)

    lr = float(o.learn_rate)
    cv0 = evaluate(allow_empty=True)  # also sees every key of a hash split
    if data.check_split():
        cv0 = evaluate()
    elif cv0["frames"] == 0:
        raise Error(NO_CV_FRAMES)
    bar.close()
    epochs = [row(0, lr, None, cv0, 0.0, 0.0, None)]
    emit(_header())
    emit(_row(epochs[0]))
    loss = epochs[0].cv_objective
    best_epoch = 0
    best = engine.snapshot()
    halving = False
    stopped = f"stopped after max epochs ({o.max_epochs})"
    if not math.isfinite(loss):
        raise Error(f"the initial cross-validation objective is {loss}: non-finite network outputs "
                    "(check the features and the feature transform)")
    interrupted = False
    limit = DIVERGE_FACTOR * max(loss, 1e-2)
    divergences = 0
    epoch = completed = 0
    try:
        while completed < o.max_epochs:  # diverged epochs cost a few minibatches and do not count
            epoch += 1
            try:
                tr, secs, wait = train_epoch(epoch, lr, limit)
            except _Diverged:
                # Back to the best model, half the learning rate, and on: the stopping
                # rule does not count this epoch (newbob would read it as convergence).
                bar.close()
                engine.restore(best)
                engine.reset_optimizer()
                nan = float("nan")
                epochs.append(EpochReport(epoch, lr, None, None, None, nan, None, None, None, 0, 0.0,
                                          accepted=False, diverged=True))
                emit(_row(epochs[-1]))
                divergences += 1
                if divergences > MAX_DIVERGENCES:
                    raise Error(f"training diverges even at learning rate {lr:g} ({divergences} times "
                                f"from {o.learn_rate:g}): check the features and the feature transform, "
                                "or lower --learn-rate") from None
                lr *= 0.5
                continue
            completed += 1
            if tr["frames"] == 0:
                raise Error(f"no training frames (minibatch size {o.minibatch_size}): check the features, "
                            "labels and CV split")
            cv = evaluate()
            bar.close()
            new = cv["objective"] / cv["frames"]
            loss_prev = loss
            accept = (new < loss or completed <= o.keep_lr_epochs or completed <= o.min_epochs) \
                and math.isfinite(new)
            if accept:
                loss = new
                best_epoch = epoch
                best = engine.snapshot()
            else:
                engine.restore(best)
                engine.reset_optimizer()
            epochs.append(row(epoch, lr, tr, cv, secs, wait, accept))
            emit(_row(epochs[-1]))
            if completed <= o.keep_lr_epochs:
                continue
            rel = (loss_prev - loss) / loss_prev if loss_prev > 0 else 0.0
            if loss <= 0.0:
                stopped = "converged: CV objective 0"
                break
            if halving and rel < o.end_halving_impr:
                if completed <= o.min_epochs:
                    continue
                stopped = f"converged: relative CV improvement {rel:.2g} < {o.end_halving_impr:g}"
                break
            if rel < o.start_halving_impr:
                halving = True
            if halving:
                lr *= o.halving_factor
    except KeyboardInterrupt:  # keep what the finished epochs achieved
        interrupted = True
        bar.close()
        stopped = f"interrupted in epoch {len(epochs)}"
    engine.restore(best)
    return Outcome(epochs=epochs, best_epoch=best_epoch, stopped=stopped, interrupted=interrupted,
                   cv_frames=int(cv0["frames"]))
