"""What an engine does for :func:`svdistill.distill`, and the C++ core's engine.

The schedule (:mod:`.schedule`) and the data pipeline (:mod:`.data`) are the
same for every engine; an engine only holds the networks and their arrays and
implements:

- ``host(raw)`` (on the reading thread) and ``prepare(host)``: one utterance's
  raw features into the engine's array, feature transform applied;
- ``concat``, ``take``, ``length``, ``labels``: the randomizer's array operations;
- ``train(x, labels, learn_rate)`` and ``evaluate(x, labels)``: one minibatch,
  returning statistics (summed over its frames) in the engine's own form;
  ``steps(minibatches, learn_rate, skip)`` trains an epoch's minibatches (the
  torch engine across ranks); ``reduce`` sums CV statistics over ranks;
  ``zero_stats``, ``add``, ``read`` and ``objectives`` turn them into numbers
  (an engine on a GPU reads them back only every ``check_every`` minibatches);
- ``snapshot``/``restore``/``reset_optimizer``: the rejected-epoch and
  divergence rules; ``result()``: the student's components with the current
  parameters written back;
- ``first_nonfinite(host, n, rows)``: where a non-finite objective comes from
  (the features, the feature transform, a teacher, the student), per utterance.

The numbers in the statistics are those of ``_core.Trainer`` (``frames``,
``objective``, ``kl_t``, ``kl``, ``hard_ce``, ``agree``, ``blocks``,
``correct``, ``labelled``); the update rules are its rules, and which
parameter blocks train, with which coefficients, comes from its ``slots``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import _core
from ..errors import option_error
from ..forward import Network
from ..model import Component, Model

STAT_KEYS = ("frames", "objective", "kl_t", "kl", "hard_ce", "agree", "blocks", "correct", "labelled")


def as_written(value: float) -> float:
    """A float32 option as its decimal (0.008, not the 0.00800000037997961 it widens to)."""
    return float(str(np.float32(value)))


class TrainOptions:
    """The loss and update options every engine receives, checked by distill(): the core's
    structs (nn/loss.h, nn/optimizer.h), which the torch engine follows too."""

    def __init__(self, loss: "_core.LossOptions", optimizer: "_core.OptimizerOptions") -> None:
        self.loss, self.optimizer = loss, optimizer

    def fingerprint(self) -> Dict[str, Any]:
        """What of them decides the trained model, for checkpoints (keys as checkpoints have them)."""
        lo, op = self.loss, self.optimizer
        return dict(temperature=as_written(lo.temperature), hard_weight=as_written(lo.hard_weight),
                    average_logits=bool(lo.average_logits), adam=bool(op.adam),
                    momentum=as_written(op.momentum), l2=as_written(op.l2_penalty))


def train_options(optimizer: str = "sgd", **values: Any) -> TrainOptions:
    """The structs with ``values`` (named as distill() names them), the rest at their defaults."""
    o = TrainOptions(_core.LossOptions(), _core.OptimizerOptions())
    o.optimizer.adam = optimizer == "adam"
    for name, value in values.items():
        setattr(o.loss if hasattr(o.loss, name) else o.optimizer, name, value)  # AttributeError: no such option
    return o


def core_trainer(comps: Sequence[Component], teachers: Sequence[Network]) -> "_core.Trainer":
    """The core's trainer over ``comps``: it also checks what any engine can train (the
    student's kinds and dims, the teachers' outputs) with the core's messages."""
    return _core.Trainer([c._c for c in comps], [t._net for t in teachers])


def first_nonfinite_row(stages: Sequence[Tuple[str, int, Callable[[], np.ndarray]]]
                        ) -> Optional[Tuple[str, int, float]]:
    """(stage, frame, value) of the first non-finite value in the first stage that has one;
    ``stages``: (what it is, the frame its first row is, its array made on demand)."""
    for stage, offset, get in stages:
        a = np.asarray(get())
        bad = ~np.isfinite(a)
        if bad.any():
            r = int(np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))[0])
            return stage, offset + r, float(a[r][bad[r]].reshape(-1)[0])
    return None


def stage_names(teachers: int) -> List[str]:
    """How messages name each teacher's outputs."""
    return ["the teacher outputs"] if teachers == 1 else [f"teacher {i + 1} outputs" for i in range(teachers)]


def local_steps(engine, batches, learn_rate: float, skip: int):
    """(step, statistics, frames) for each minibatch of ``batches`` from step ``skip`` on:
    the steps before it were trained before a checkpoint, and are read and shuffled
    again but not trained."""
    b = -1
    for b, (x, y, frames) in enumerate(batches):
        if b >= skip:
            yield b, engine.train(x, y, learn_rate), frames
    if skip and b + 1 < skip:
        raise option_error("resume", f"is set, but the checkpoint is {skip} minibatches into the epoch and the "
                           f"data now give only {b + 1}")


class CoreEngine:
    """The C++ trainer: numpy arrays, one minibatch per call with the GIL released."""

    name = "core"
    device = "cpu"
    precision = "fp32"
    check_every = 1
    world = 1

    def __init__(self, comps: List[Component], teachers: Sequence[Model], feature_transform: Optional[Model],
                 opts: TrainOptions) -> None:
        self.comps = comps
        self.teachers = [Network(t) for t in teachers]
        self.trainer = core_trainer(comps, self.teachers)
        self.slots = self.trainer.slots  # the trainable blocks; distill() refuses a student without any
        self.ft = Network(feature_transform) if feature_transform is not None else None
        self.opts = opts

    # -- arrays --------------------------------------------------------------
    def host(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        return self.ft(raw) if self.ft is not None else raw

    def concat(self, xs: List[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs) if len(xs) > 1 else xs[0]

    @staticmethod
    def take(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
        return x[perm]

    @staticmethod
    def length(x: np.ndarray) -> int:
        return len(x)

    @staticmethod
    def labels(y: np.ndarray) -> np.ndarray:
        return y

    # -- minibatches ---------------------------------------------------------
    def train(self, x: np.ndarray, y: Optional[np.ndarray], learn_rate: float) -> Dict[str, float]:
        self.opts.optimizer.learn_rate = learn_rate  # the schedule's rate of this minibatch
        return self.trainer.train(x, y, self.opts.optimizer, self.opts.loss)

    def evaluate(self, x: np.ndarray, y: Optional[np.ndarray]) -> Dict[str, float]:
        return self.trainer.evaluate(x, y, self.opts.loss)

    def steps(self, batches, learn_rate: float, skip: int = 0):
        return local_steps(self, batches, learn_rate, skip)

    @staticmethod
    def reduce(total: Dict[str, float]) -> Dict[str, float]:
        return total

    @staticmethod
    def zero_stats() -> Dict[str, float]:
        return {k: 0 for k in STAT_KEYS}

    @staticmethod
    def add(total: Dict[str, float], s: Dict[str, float]) -> None:
        for k, v in s.items():
            total[k] += v

    @staticmethod
    def read(total: Dict[str, float]) -> Dict[str, float]:
        return dict(total)

    @staticmethod
    def objectives(stats: Sequence[Dict[str, float]]) -> List[float]:
        return [s["objective"] / max(s["frames"], 1) for s in stats]

    # -- state ---------------------------------------------------------------
    def snapshot(self) -> List[Dict[str, np.ndarray]]:
        return [{k: v.copy() for k, v in c.params.items()} for c in self.comps]

    def restore(self, snap: List[Dict[str, np.ndarray]]) -> None:
        for c, params in zip(self.comps, snap):
            for k, v in c.params.items():
                v[...] = params[k]

    def reset_optimizer(self) -> None:
        self.trainer.reset_optimizer()

    def first_nonfinite(self, raw: np.ndarray, n: int, rows: slice) -> Optional[Tuple[str, int, float]]:
        """Where one utterance (its ``rows`` of the first ``n`` frames) first gives a value that is
        not finite: (stage, frame, value), or None."""
        if getattr(self, "_student_net", None) is None:
            self._student_net = Network(Model(self.comps))  # shares the components' parameter arrays
        x: List[np.ndarray] = []

        def ft_out() -> np.ndarray:
            x.append(self.prepare(raw)[:n][rows])
            return x[0]

        stages = [("the features are", 0, lambda: raw[:n])]
        if self.ft is not None:
            stages.append(("the feature transform outputs", rows.start, ft_out))
        else:
            x.append(raw[:n][rows])
        stages += [(name, rows.start, lambda t=t: t(x[0]))  # type: ignore[misc]
                   for name, t in zip(stage_names(len(self.teachers)), self.teachers)]
        stages.append(("the student outputs", rows.start, lambda: self._student_net(x[0])))
        return first_nonfinite_row(stages)

    def result(self) -> List[Component]:
        return self.comps

    def close(self) -> None:
        pass

    # -- checkpoints ---------------------------------------------------------
    def state_arrays(self, best: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
        """Current and best parameters and the optimizer's state, by name."""
        out: Dict[str, np.ndarray] = {}
        for i, (c, snap) in enumerate(zip(self.comps, best)):
            for k, v in c.params.items():
                out[f"cur/{i}/{k}"] = v
                out[f"best/{i}/{k}"] = snap[k]
        first, second, step = self.trainer.optimizer_state()
        for j, (a, b) in enumerate(zip(first, second)):
            out[f"m1/{j}"], out[f"m2/{j}"] = a, b
        out["adam_step"] = np.array(step, np.int64)
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Sets the state :meth:`state_arrays` saved; returns the best snapshot."""
        best = []
        for i, c in enumerate(self.comps):
            snap = {}
            for k, v in c.params.items():
                v[...] = arrays[f"cur/{i}/{k}"]
                snap[k] = np.array(arrays[f"best/{i}/{k}"], dtype=np.float32)
            best.append(snap)
        n = len(self.slots)
        self.trainer.set_optimizer_state([arrays[f"m1/{k}"] for k in range(n)],
                                         [arrays[f"m2/{k}"] for k in range(n)], int(arrays["adam_step"]))
        return best
