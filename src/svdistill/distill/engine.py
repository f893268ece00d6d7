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

A teacher is a :class:`~svdistill.Model` or a *logits teacher*: an object with
``input_dim``, ``output_dim`` and ``logits(x)``, which maps the feature-
transformed frames of a minibatch (a float32 numpy array, frames x input_dim)
to its logits (frames x output_dim, float32), and optionally ``name`` (how
messages name it, e.g. "teacher ensemble"). Its soft targets are
softmax(logits / T), exactly as a teacher model with those logits would give.
A logits teacher is the only teacher; it runs on the CPU (the torch engine
hands it the host copy of each minibatch and moves its logits to the device).

Hints (``hints``: (student component, teacher component) index pairs, from
:func:`hint_pairs`) add B x the hint term to the objective (nn/loss.cc).

The numbers in the statistics are those of ``_core.Trainer`` (``frames``,
``objective``, ``kl_t``, ``kl``, ``hard_ce``, ``agree``, ``blocks``,
``correct``, ``labelled``, ``hint``); the update rules are its rules, and which
parameter blocks train, with which coefficients, comes from its ``slots``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from .. import _core
from ..errors import Error, option_error
from ..forward import Network
from ..model import Component, Model

STAT_KEYS = ("frames", "objective", "kl_t", "kl", "hard_ce", "agree", "blocks", "correct", "labelled", "hint")

#: A teacher: a Model, or a logits teacher (see the module's docstring).
Teacher = Union[Model, Any]


class LogitsTeacherLike(Protocol):
    """What a logits teacher has (``name``, ``fingerprint`` and ``blocks`` are optional:
    ``blocks``, the widths of the softmax blocks its logits are read in, default one block)."""

    input_dim: int
    output_dim: int

    def logits(self, x: np.ndarray) -> np.ndarray: ...


class LogitsTeacher:
    """A logits teacher made of a function: ``logits(x)`` of feature-transformed frames
    ``x`` (frames x ``input_dim``, float32) -> frames x ``output_dim``; ``name`` names it
    in messages, ``fingerprint`` in checkpoints."""

    def __init__(self, input_dim: int, output_dim: int, logits: Callable[[np.ndarray], np.ndarray],
                 name: str = "teacher", fingerprint: Any = None) -> None:
        self.input_dim, self.output_dim, self.name = int(input_dim), int(output_dim), name
        self.fingerprint = fingerprint  # what identifies it in checkpoints (JSON-able)
        self._logits = logits

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._logits(x)


def is_logits_teacher(t: Any) -> bool:
    """Whether ``t`` gives its logits itself (not a Model run by the engine)."""
    return not isinstance(t, (Model, Network)) and callable(getattr(t, "logits", None))


def teacher_name(t: Any) -> str:
    """How messages name a logits teacher ("teacher ensemble", ...)."""
    return str(getattr(t, "name", "teacher"))


def logits_of(t: Any, x: np.ndarray) -> np.ndarray:
    """A logits teacher's logits of ``x``, checked: float32, frames x output_dim."""
    z = np.ascontiguousarray(t.logits(x), dtype=np.float32)
    if z.shape != (len(x), t.output_dim):
        raise Error(f"the {teacher_name(t)} gave logits of shape {z.shape} for {len(x)} frames; expected "
                    f"({len(x)}, {t.output_dim})")
    return z


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


def core_trainer(comps: Sequence[Component], teachers: Sequence[Teacher],
                 hints: Sequence[Tuple[int, int]] = ()) -> "_core.Trainer":
    """The core's trainer over ``comps``: it also checks what any engine can train (the
    student's kinds and dims, the teachers' outputs, the hints) with the core's messages.
    A logits teacher must be the only one, and map the student's input dim to its output dim."""
    external = [t for t in teachers if is_logits_teacher(t)]
    if external:
        if len(teachers) != 1:
            raise Error(f"the {teacher_name(external[0])} gives the soft targets alone: it cannot be combined "
                        "with other teachers")
        t = external[0]
        s_in, s_out = comps[0].input_dim, comps[-1].output_dim
        dims = (getattr(t, "input_dim", None), getattr(t, "output_dim", None))
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
            raise option_error("teacher", f"a logits teacher (an object with logits()) must have integer input_dim "
                                          f"and output_dim, got {dims[0]!r} and {dims[1]!r}")
        if (t.input_dim, t.output_dim) != (s_in, s_out):
            raise Error(f"the {teacher_name(t)} maps {t.input_dim} -> {t.output_dim} dims (after the feature "
                        f"transform), the student {s_in} -> {s_out}")
        last = comps[-1]
        student_blocks = [int(b) for b in last.ints] if last.kind == "BlockSoftmax" and last.ints is not None \
            else [s_out]
        blocks = [int(b) for b in getattr(t, "blocks", None) or [t.output_dim]]
        if blocks != student_blocks:
            raise Error(f"the {teacher_name(t)} gives distributions over blocks {blocks}, the student's softmax "
                        f"over {student_blocks}: they are not the same distributions")
        return _core.Trainer([c._c for c in comps], [], True, list(hints))
    nets = [t if isinstance(t, Network) else Network(t) for t in teachers]
    return _core.Trainer([c._c for c in comps], [t._net for t in nets], False, list(hints))


def nonlinearities(comps: Sequence[Component]) -> List[int]:
    """Indices of the components hints may match: the activations (the kind table's kinds
    without parameters, nnet1 Layout::None) before the last component."""
    return list(_core.nonlinearities([c._c for c in comps]))


def parse_layers(spec: Optional[str], count: Optional[int]) -> List[int]:
    """``hint_layers``: None (every pair), or "1,3", "2-4", "1,3-5" (1-based, in the order of the
    nonlinearities) as 0-based pair indices, sorted, each in [0, count); ``count`` None checks
    the form alone (and returns [])."""
    if spec is None:
        return list(range(count or 0))
    if not isinstance(spec, str) or not re.fullmatch(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*", spec):
        raise option_error("hint_layers", f"must be a list of layers such as '1,3' or '2-4' (1-based, in the order "
                                          f"of the nonlinearities), got {spec!r}")
    chosen: set = set()
    for part in spec.split(","):
        ends = [int(v) for v in part.split("-")]
        lo, hi = ends[0], ends[-1]
        if lo < 1 or hi < lo:
            raise option_error("hint_layers", f"{part.strip()}: layers are numbered from 1, and a range goes up")
        if count is None:  # the form alone (the models are not read yet)
            continue
        if hi > count:
            raise option_error("hint_layers", f"{part.strip()}: the student and the teacher have {count} matching "
                                              f"nonlinearities")
        chosen.update(range(lo - 1, hi))
    return sorted(chosen)


def hint_pairs(comps: Sequence[Component], teacher: Model, spec: Optional[str]) -> List[Tuple[int, int]]:
    """(student component, teacher component) of each hint: the nonlinearities of both, paired
    in order; ``spec`` (:func:`parse_layers`) picks pairs. Refused, naming the layer, when the
    counts or the dims of a chosen pair differ."""
    s_nl, t_nl = nonlinearities(comps), nonlinearities(teacher.components)
    if spec is None and len(s_nl) != len(t_nl):
        raise option_error("hint_layers", f"the student has {len(s_nl)} nonlinearities before its softmax and the "
                                          f"teacher {len(t_nl)}: they cannot be paired in order; give the layers "
                                          "to match (1-based)")
    count = min(len(s_nl), len(t_nl))
    if count == 0:
        raise option_error("hint_weight", "needs nonlinearities to match: the student has "
                                          f"{len(s_nl)} before its softmax and the teacher {len(t_nl)}")
    pairs = []
    for k in parse_layers(spec, count):
        s, t = s_nl[k], t_nl[k]
        sd, td = comps[s].output_dim, teacher.components[t].output_dim
        if sd != td:
            raise option_error("hint_layers", f"layer {k + 1}: the student's nonlinearity (component {s + 1} "
                                              f"{comps[s].marker}) has {sd} dims, the teacher's (component "
                                              f"{t + 1} {teacher.components[t].marker}) {td}")
        pairs.append((s, t))
    return pairs


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


def stage_names(teachers: Sequence[Teacher]) -> List[str]:
    """How messages name each teacher's outputs."""
    if len(teachers) == 1:
        return [f"the {teacher_name(teachers[0])} outputs" if is_logits_teacher(teachers[0]) else "the teacher outputs"]
    return [f"teacher {i + 1} outputs" for i in range(len(teachers))]


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

    def __init__(self, comps: List[Component], teachers: Sequence[Teacher], feature_transform: Optional[Model],
                 opts: TrainOptions, hints: Sequence[Tuple[int, int]] = ()) -> None:
        self.comps = comps
        self.teachers = [t if is_logits_teacher(t) else Network(t) for t in teachers]
        self.trainer = core_trainer(comps, self.teachers, hints)
        self.external = self.teachers[0] if self.trainer.num_teachers and is_logits_teacher(self.teachers[0]) else None
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
        if self.external is not None:
            return self.trainer.train(x, y, self.opts.optimizer, self.opts.loss, logits_of(self.external, x))
        return self.trainer.train(x, y, self.opts.optimizer, self.opts.loss)

    def evaluate(self, x: np.ndarray, y: Optional[np.ndarray]) -> Dict[str, float]:
        if self.external is not None:
            return self.trainer.evaluate(x, y, self.opts.loss, logits_of(self.external, x))
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
        stages += [(name, rows.start,
                    (lambda t=t: t.logits(x[0])) if is_logits_teacher(t) else (lambda t=t: t(x[0])))  # type: ignore[misc]
                   for name, t in zip(stage_names(self.teachers), self.teachers)]
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
