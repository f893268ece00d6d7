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

Two engines train: the C++ core (the default: one minibatch per call with the
GIL released) and PyTorch (``engine="torch"``, on the CPU or a CUDA device).
They share everything but the arithmetic: :mod:`.data` (reading, labels, CV
split, read-ahead, the randomizer), :mod:`.schedule` (CV, newbob, rejected and
diverged epochs) and :mod:`.report` (the table). Teacher outputs are computed
on the fly for each minibatch, never stored.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence, Tuple, Union

from ..errors import Error
from ..forward import ModelLike, _load
from ..io import PathOrFile, write
from ..model import Model
from .checkpoint import Checkpoints, data_fingerprint, model_fingerprint
from .data import Data, FeatsLike, LabelsLike, Source, load_labels
from .distributed import Dist
from .engine import CoreEngine, LossOptions
from .report import DistillReport, EpochReport, _Progress
from .schedule import ScheduleOptions, run

__all__ = ["DistillReport", "EpochReport", "distill"]


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
            log: Optional[Callable[[str], None]] = None,
            engine: Optional[str] = None,
            device: Optional[str] = None,
            precision: str = "fp32",
            read_ahead: int = 32,
            checkpoint_dir: Optional[str] = None,
            checkpoint_every: int = 0,
            resume: bool = False) -> Tuple[Model, DistillReport]:
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
    engine : "core" or "torch", optional
        Who computes: the C++ core (default on the CPU) or PyTorch (needs
        ``svdistill[torch]``; the default when ``device`` is a CUDA device). Both
        follow the same rules and give the same model up to float rounding.
    device : "cpu", "cuda" or "cuda:N", optional
        Where the torch engine trains (default "cpu").
    precision : "fp32", "tf32" or "bf16"
        Torch engine on CUDA: fp32 (default), TF32 matmuls, or bf16 autocast
        (loss, statistics and updates stay fp32). Only fp32 on the CPU.
    read_ahead : int
        Utterances read ahead of training on a background thread (0: none).
    checkpoint_dir : path, optional
        Save the run's state there after every epoch (and every
        ``checkpoint_every`` training frames, if > 0), atomically; a run that
        dies loses at most that much work.
    resume : bool
        Continue from the newest checkpoint in ``checkpoint_dir``: the run ends
        with the model an uninterrupted run would have made (bit-identical on
        the core engine at the same thread count). Refused, naming the
        difference, when the checkpoint was made with other options or data;
        ``max_epochs`` may differ.

    Returns
    -------
    (Model, DistillReport)
    """
    t_model = _load(student)
    teacher_list = [] if teachers is None else (
        list(teachers) if isinstance(teachers, (list, tuple)) else [teachers])
    engine = _choose_engine(engine, device, precision)
    dist = Dist.from_env()
    if dist is not None and engine != "torch":
        raise Error(f"WORLD_SIZE is {dist.world} (torchrun): several processes train with --engine torch only")
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
                        ("max epochs", max_epochs, 0), ("read ahead", read_ahead, 0)):
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
    if int(checkpoint_every) != checkpoint_every or checkpoint_every < 0:
        raise Error(f"checkpoint every must be a non-negative number of frames, got {checkpoint_every}")
    if (resume or checkpoint_every) and checkpoint_dir is None:
        raise Error("--resume and --checkpoint-every need --checkpoint-dir")
    randomizer_size = max(randomizer_size, minibatch_size)

    comps = [c.copy() for c in t_model.components]
    teacher_models = [_load(t) for t in teacher_list]
    ft_model = _load(feature_transform) if feature_transform is not None else None
    opts = LossOptions(temperature=float(temperature), hard_weight=float(hard_weight),
                       average_logits=bool(average_logits), optimizer=optimizer, momentum=float(momentum),
                       l2=float(l2))
    if dist is not None:
        dist.start(dist.device(device))
    eng = None
    try:
        if engine == "core":
            eng = CoreEngine(comps, teacher_models, ft_model, opts)
        else:
            from .engine_torch import TorchEngine
            eng = TorchEngine(comps, teacher_models, ft_model, opts, device=device, precision=precision, dist=dist)
        # Only one rank (rank 0 under torchrun) writes the table, checkpoints and the model.
        writer = dist is None or dist.is_writer
        emit = (log or (lambda s: None)) if writer else (lambda s: None)
        if not eng.slots:
            raise Error("nothing to train: every learn-rate coefficient of the student is 0")
        student_in = comps[0].input_dim
        if ft_model is not None and ft_model.output_dim != student_in:
            raise Error(f"the feature transform outputs {ft_model.output_dim} dims but the student expects "
                        f"{student_in}")

        lab = load_labels(labels, "labels")
        cv_lab = load_labels(cv_labels, "cv labels") if cv_labels is not None else lab
        data = Data(Source(feats, "features"), Source(cv_feats, "cv-feats") if cv_feats is not None else None,
                    cv_fraction, student_in, ft_model.input_dim if ft_model is not None else None,
                    comps[-1].output_dim, lab, cv_lab, need_labels=not teacher_list, host=eng.host,
                    read_ahead=int(read_ahead), rank=dist.rank if dist else 0, world=dist.world if dist else 1)
        sched = ScheduleOptions(learn_rate=float(learn_rate), minibatch_size=int(minibatch_size),
                                randomizer_size=int(randomizer_size), max_epochs=int(max_epochs),
                                min_epochs=int(min_epochs), keep_lr_epochs=int(keep_lr_epochs),
                                start_halving_impr=float(start_halving_impr), end_halving_impr=float(end_halving_impr),
                                halving_factor=float(halving_factor), seed=int(seed), has_teachers=bool(teacher_list))
        ckpt = None
        if checkpoint_dir is not None:
            # Everything that decides the trained model, save --max-epochs (a run may go on).
            options = {k: v for k, v in dataclasses.asdict(sched).items() if k not in ("max_epochs", "has_teachers")}
            fingerprint = dict(
                options, **vars(opts), engine=eng.name, device=eng.device.split(":")[0], precision=eng.precision,
                ranks=eng.world, cv_fraction=float(cv_fraction),
                student=model_fingerprint(t_model), teachers=[model_fingerprint(t) for t in teacher_models],
                feature_transform=None if ft_model is None else model_fingerprint(ft_model),
                feats=data_fingerprint(feats), cv_feats=None if cv_feats is None else data_fingerprint(cv_feats),
                labels=None if labels is None else data_fingerprint(labels),
                cv_labels=None if cv_labels is None else data_fingerprint(cv_labels))
            ckpt = Checkpoints(str(checkpoint_dir), fingerprint, writer=writer)
            if not resume and ckpt.any():
                raise Error(f"--checkpoint-dir {checkpoint_dir} already holds checkpoints of a run: --resume "
                            "to continue it, or give another (or an empty) folder")
        out = run(eng, data, sched, _Progress(progress if writer else False), emit, checkpoints=ckpt,
                  resume=bool(resume), checkpoint_every=int(checkpoint_every))

        result = Model(eng.result(), binary=t_model.binary, dialect=t_model.dialect, source=t_model.source)
        report = DistillReport(epochs=out.epochs, best_epoch=out.best_epoch, stopped=out.stopped,
                               temperature=float(temperature), hard_weight=float(hard_weight),
                               teachers=len(teacher_list), cv_frames=out.cv_frames,
                               cv_source={"cv-feats": "--cv-feats", "hash": f"{cv_fraction:g} of the utterances",
                                          "tail": f"last {cv_fraction:g} of each utterance"}[data.split],
                               skipped_utterances=len(data.skipped), unlabelled_utterances=len(data.unlabelled),
                               engine=eng.name, device=eng.device, precision=eng.precision, ranks=eng.world)
        emit(report.summary())
        if writer and output is not None and (out.best_epoch > 0 or not out.interrupted):
            write(result, output, binary=t_model.binary if binary is None else binary,
                  dialect=t_model.dialect if dialect is None else dialect, digits=digits)
        if out.interrupted:
            if output is not None:
                emit(f"interrupted: the best model so far (epoch {out.best_epoch}) was written to {output}"
                     if out.best_epoch > 0 else f"interrupted before an epoch improved: {output} not written")
            raise KeyboardInterrupt
        return result, report
    finally:
        if eng is not None:
            eng.close()
        if dist is not None:
            dist.stop()


def _choose_engine(engine: Optional[str], device: Optional[str], precision: str) -> str:
    """The engine for these options: core on the CPU unless told otherwise; a CUDA device means torch."""
    if engine not in (None, "core", "torch"):
        raise Error(f"engine must be 'core' or 'torch', got {engine!r}")
    if precision not in ("fp32", "tf32", "bf16"):
        raise Error(f"precision must be fp32, tf32 or bf16, got {precision!r}")
    on_cuda = device is not None and str(device).startswith("cuda")
    if engine == "core" and device is not None and str(device) != "cpu":
        raise Error(f"--device {device}: the core engine runs on the CPU; use --engine torch")
    if engine == "core" and precision != "fp32":
        raise Error(f"--precision {precision}: the core engine trains in fp32")
    return engine or ("torch" if on_cuda else "core")
