"""The per-epoch table of :func:`svdistill.distill` and its summary."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

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
    ``data_wait`` is the part of ``seconds`` spent waiting for features (reading,
    decoding) rather than training: near 0 when reading keeps up. ``train_hint``
    and ``cv_hint`` are the hint term per frame, unweighted (None without hints;
    the objectives include it times the hint weight).
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
    data_wait: float = 0.0
    train_hint: Optional[float] = None
    cv_hint: Optional[float] = None

    @property
    def frames_per_second(self) -> Optional[float]:
        return self.train_frames / self.seconds if self.seconds > 0 and self.train_frames else None

    @property
    def wait_share(self) -> Optional[float]:
        """The share of the epoch's training time spent waiting for data."""
        return self.data_wait / self.seconds if self.seconds > 0 and self.train_frames else None


@dataclasses.dataclass
class DistillReport:
    """What :func:`distill` did: the per-epoch table and how it ended. ``teachers`` counts
    the teachers (an ensemble is one, ``teacher_ensemble`` saying what it holds:
    "1 generalist + K specialists"); ``hint_weight`` is 0 without hints."""

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
    engine: str = "core"
    device: str = "cpu"
    precision: str = "fp32"
    ranks: int = 1            # processes that trained together (torchrun)
    #: Why training stopped early (the model is then the best of the epochs before); None
    #: when it ran to the end of its schedule.
    error: Optional[str] = None
    teacher_ensemble: Optional[str] = None
    hint_weight: float = 0.0

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
            row["wait_share"] = e.wait_share
        return d

    def format_table(self) -> str:
        hints = self.hint_weight > 0
        return "\n".join([_header(hints)] + [_row(e, hints) for e in self.epochs] + [self.summary()])

    def summary(self) -> str:
        b, i = self.best, self.initial
        parts = [f"best epoch {self.best_epoch}: CV objective {i.cv_objective:.4f} -> {b.cv_objective:.4f}"]
        if b.cv_kl is not None:
            parts.append(f"KL {i.cv_kl:.4f} -> {b.cv_kl:.4f}")
        if b.cv_agreement is not None:
            parts.append(f"agreement {i.cv_agreement:.2%} -> {b.cv_agreement:.2%}")
        if b.cv_accuracy is not None:
            parts.append(f"accuracy {i.cv_accuracy:.2%} -> {b.cv_accuracy:.2%}")
        if b.cv_hint is not None and i.cv_hint is not None:
            parts.append(f"hint {i.cv_hint:.4f} -> {b.cv_hint:.4f}")
        text = "; ".join(parts) + f" ({self.stopped})"
        if self.teacher_ensemble:
            text += f"\nteacher: an ensemble of {self.teacher_ensemble}"
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


def _header(hints: bool = False) -> str:
    """The table's header; ``hints``: with the hint columns (train and CV)."""
    hint = f" {'train hint':>10}" if hints else ""
    cv_hint = f" {'cv hint':>8}" if hints else ""
    return (f"{'epoch':>5} {'lr':>9} {'train obj':>10}{hint} {'train agr':>9} {'train acc':>9} "
            f"{'cv obj':>9} {'cv KL':>8}{cv_hint} {'cv agr':>8} {'cv acc':>8} {'frames/s':>9} {'wait':>5}  result")


def _row(e: EpochReport, hints: bool = False) -> str:
    fps = e.frames_per_second
    result = ("diverged" if e.diverged else "initial" if e.accepted is None
              else "accepted" if e.accepted else "rejected")
    hint = f" {_num(e.train_hint):>10}" if hints else ""
    cv_hint = f" {_num(e.cv_hint):>8}" if hints else ""
    return (f"{e.epoch:>5} {e.learn_rate:>9.3g} {_num(e.train_objective):>10}{hint} {_pct(e.train_agreement):>9} "
            f"{_pct(e.train_accuracy):>9} {'-' if e.diverged else format(e.cv_objective, '.4f'):>9} "
            f"{_num(e.cv_kl):>8}{cv_hint} "
            f"{_pct(e.cv_agreement):>8} {_pct(e.cv_accuracy):>8} "
            f"{'-' if fps is None else f'{fps:,.0f}':>9} "
            f"{'-' if e.wait_share is None else f'{e.wait_share:.0%}':>5}  {result}")
