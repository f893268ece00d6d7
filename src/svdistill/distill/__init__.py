"""Knowledge distillation (Hinton, Vinyals & Dean 2015) and frame-level training.

A student (typically the output of :func:`svdistill.compress`) is fine-tuned on
the soft targets of one or more teachers: softmax(teacher logits / T) against
the student's softmax at the same temperature, the cross-entropy scaled by
T^2, optionally mixed with cross-entropy against labels (Kaldi alignments as
pdf ids). Without teachers it is ordinary frame-level cross-entropy training,
as Kaldi's ``nnet-train-frmshuff`` does it. The teacher may also be a
generalist with its specialists (``teacher_ensemble``: their per-frame
combination, Hinton et al. section 5.3) or any *logits teacher* (an object
giving the logits of each minibatch). With ``hint_weight`` the student also
learns one teacher model's hidden activations after each matching
nonlinearity (FitNets' hints).

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
import numbers
import os
import re
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _core
from ..errors import NOT_GIVEN, Error, option_error, renamed
from ..forward import ModelLike, _ensemble_runner, _load
from ..io import PathOrFile, check_write_options, output_target, write
from ..model import Model
from ..progress import Progress
from .checkpoint import Checkpoints, data_fingerprint, ensemble_fingerprint, model_fingerprint
from .data import Data, FeatsLike, LabelsLike, Source, load_labels
from .distributed import Dist
from .engine import (
    CoreEngine,
    LogitsTeacher,
    LogitsTeacherLike,
    as_written,
    hint_pairs,
    is_logits_teacher,
    parse_layers,
    train_options,
)
from .report import DistillReport, EpochReport
from .schedule import ScheduleOptions, run

if TYPE_CHECKING:  # imported when the torch engine is asked for: it imports torch
    from ..specialists import Ensemble
    from .engine_torch import TorchEngine

__all__ = ["DistillReport", "EpochReport", "TrainingStopped", "distill"]

# The core's option structs hold the defaults of the options they share with distill().
_LOSS, _OPT = _core.LossOptions(), _core.OptimizerOptions()
_L2_PENALTY = as_written(_OPT.l2_penalty)


def distill(student: ModelLike, feats: FeatsLike, *,
            teacher: Union[ModelLike, Sequence[ModelLike], "LogitsTeacherLike", None] = None,
            teacher_ensemble: Union[str, "os.PathLike[str]", "Ensemble", None] = None,
            feature_transform: Optional[ModelLike] = None,
            temperature: float = as_written(_LOSS.temperature),
            labels: Optional[LabelsLike] = None,
            hard_weight: Optional[float] = None,
            average_logits: bool = _LOSS.average_logits,
            top_n: Optional[int] = None,
            tolerance: Optional[float] = None,
            max_iterations: Optional[int] = None,
            hint_weight: float = 0.0,
            hint_layers: Optional[str] = None,
            optimizer: str = "sgd",
            learn_rate: Optional[float] = None,
            momentum: float = as_written(_OPT.momentum),
            l2_penalty: float = _L2_PENALTY,
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
            cv_fraction: Optional[float] = None,
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
            resume: bool = False,
            teachers: Any = NOT_GIVEN,
            l2: Any = NOT_GIVEN) -> Tuple[Model, DistillReport]:
    """Fine-tune ``student`` on the soft targets of ``teacher`` (and/or on labels).

    Parameters
    ----------
    student : Model or path
        Must end in ``<Softmax>`` or ``<BlockSoftmax>``; its structure (ranks) is
        kept. Components with learn-rate coefficient 0 stay frozen.
    feats : rspecifier, dict of (frames x dims) arrays, or one 2-D array
        Training features (before the feature transform). An rspecifier is read
        once per epoch (stdin cannot be; commands ``ark:cmd |`` are re-run).
    teacher : Model, path, or a list of them (an ensemble)
        Their soft targets are averaged (``average_logits``: their logits).
        None: frame-level training on ``labels`` only. Or, alone, a *logits
        teacher*: an object with ``input_dim``, ``output_dim`` and ``logits(x)``
        mapping the feature-transformed frames of a minibatch (float32, frames x
        input_dim) to frames x output_dim float32 logits, called on the CPU; its
        soft targets are exactly those of a model with these logits.
    teacher_ensemble : path of ``ensemble.json``, or a :class:`svdistill.specialists.Ensemble`
        A generalist and its specialists (see :func:`svdistill.specialists`) as the
        one teacher, in place of ``teacher``: per frame their combination q
        (section 5.3 of Hinton et al. 2015, with the ensemble's ``top_n``), the soft
        targets at temperature T being softmax(log q / T). Computed on the CPU
        (with the torch engine too). ``feature_transform`` defaults to the
        ensemble's; given, it must be the same model.
    top_n, tolerance, max_iterations
        The combination's options (:func:`svdistill.specialists.combine`; default:
        the ensemble's, for a path those of ``svdistill forward --ensemble``); only
        with ``teacher_ensemble``.
    feature_transform : Model or path, optional
        Run frozen on each utterance before everything else (Kaldi's
        ``--feature-transform``); splicing belongs here, since frames are shuffled.
    temperature : float
        T of the soft targets and of the student's softmax in the soft term.
    labels : alignment rspecifier (pdf ids, ``ali-to-pdf`` output), dict or array
    hard_weight : float
        a in (1 - a) T^2 CE(soft) + a CE(labels). Default: 0 without labels,
        0.1 with labels and teachers, 1 without teachers.
    hint_weight : float
        B >= 0 (default 0: no hints): adds B x the hint term to the objective
        (FitNets' hints): per frame, over the matched layers l, the mean over
        units of (s_l - t_l)^2 / v_l, s_l and t_l the student's and the teacher's
        activations after their l-th matching nonlinearity, v_l the mean over
        units of the teacher's per-unit activation variance over the minibatch
        (cross-validation: over each chunk evaluated; at least 1e-4, so that a
        dead layer does not divide by 0). Needs exactly one ``teacher`` model.
        The CV objective includes it (newbob judges what is optimised); the
        table shows it (train and CV, per frame, unweighted).
    hint_layers : str, optional
        Which nonlinearities to match: the activation components before the
        final softmax of student and teacher, paired in order and numbered from
        1: "1,3", "2-4", "1,3-4". Default: every pair (the counts must then be
        equal); each chosen pair must have equal dims. Needs ``hint_weight`` > 0.
    optimizer : "sgd" or "adam"
        SGD: Kaldi's semantics (gradients summed over the minibatch, per-layer
        learn-rate coefficients, momentum, L2 = Kaldi's l2-penalty, MaxNorm).
        Adam: mean gradients; ``l2_penalty`` becomes decoupled weight decay.
    learn_rate : float
        Default: 0.008 for SGD (Kaldi's default; it multiplies gradients summed
        over the minibatch, so it is a per-frame rate), 0.001 for Adam.
    momentum : float
        SGD momentum (default 0, as Kaldi's).
    l2_penalty : float
        Kaldi's l2-penalty (SGD), decoupled weight decay (Adam); default 0.
    minibatch_size, randomizer_size : int
        Frames per update, and of the shuffling buffer (as nnet-train-frmshuff;
        a buffer smaller than a minibatch is made one minibatch). As there, an
        incomplete last minibatch of an epoch is dropped: a minibatch larger than
        the training frames is refused, saying so.
    max_epochs, min_epochs, keep_lr_epochs, start_halving_impr, end_halving_impr, halving_factor
        The newbob schedule of Kaldi's train_scheduler.sh.
    cv_feats, cv_labels : held-out data. Without ``cv_feats``, ``cv_fraction``
        (default 0.1; refused with ``cv_feats``) of the utterances (chosen by a
        hash of their keys) are held out; with too few utterances for that, the
        last ``cv_fraction`` of each utterance. ``cv_labels`` label ``cv_feats``
        (default: ``labels``) and need them; with teachers and no ``labels`` they
        give the CV accuracy without entering the loss.
    seed : int
        Shuffling seed (same seed, data and thread count: same model).
    output : path, optional
        Where to write the best student (atomically); encoding and dialect follow
        the student's input unless ``binary``/``dialect`` say otherwise.
    progress : bool, optional
        Progress line on stderr (default: when stderr is a terminal).
        Ctrl-C (KeyboardInterrupt), or any exception that is not an ``Exception``
        (SystemExit, what a signal handler raises), stops training; the best model
        of the finished epochs is still written to ``output`` before the interrupt
        propagates.
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
    teachers, l2
        Deprecated names of ``teacher`` and ``l2_penalty`` (a DeprecationWarning);
        they will be removed in the next release.

    Returns
    -------
    (Model, DistillReport)

    Raises
    ------
    TrainingStopped
        Training stopped early after an epoch had improved the student: it
        diverged at every learning rate tried (halved 10 times),
        or the data failed in a later epoch. The best model so far was written to
        ``output`` and is the exception's ``.model`` (with ``.report``); the
        message is the cause's. The same failure before any epoch improved is
        raised as it is (an :class:`Error`), and nothing is written.
    Error
        A bad option (naming its keyword), bad data (naming the source, the
        utterance and the frame: a non-finite value is traced to the features,
        the feature transform, a teacher or the student at once), a model that
        cannot be trained.
    """
    if teachers is not NOT_GIVEN:
        teacher = renamed("distill", "teachers", "teacher", teachers, teacher, None)
    if l2 is not NOT_GIVEN:
        l2_penalty = renamed("distill", "l2", "l2_penalty", l2, l2_penalty, _L2_PENALTY)
    # Every option is checked before a model is read or anything trained: a bad value costs nothing.
    temperature = _number("temperature", temperature)
    if not temperature > 0:
        raise option_error("temperature", f"must be > 0, got {temperature:g}")
    if not np.float32(temperature) > 0:  # as the core holds it: 1e-46 would be 0
        raise option_error("temperature", f"must be at least 1.4e-45 (the core holds it as a float32), "
                                          f"got {temperature:g}")
    if hard_weight is not None:
        hard_weight = _number("hard_weight", hard_weight)
        if not 0.0 <= hard_weight <= 1.0:
            raise option_error("hard_weight", f"must lie in [0, 1], got {hard_weight:g}")
    average_logits = _flag("average_logits", average_logits)
    hint_weight = _number("hint_weight", hint_weight)
    if hint_weight < 0:
        raise option_error("hint_weight", f"must be >= 0, got {hint_weight:g}")
    if hint_layers is not None:
        if not hint_weight > 0:
            raise option_error("hint_layers", "chooses the layers of the hint term, and {hint_weight} is 0 (no hints)",
                               others=["hint_weight"])
        parse_layers(hint_layers, None)  # the form now; the range once the models are read
    if optimizer not in ("sgd", "adam"):
        raise option_error("optimizer", f"must be 'sgd' or 'adam', got {optimizer!r}")
    if learn_rate is None:
        learn_rate = as_written(_OPT.learn_rate if optimizer == "sgd" else _core.OptimizerOptions.adam_learn_rate)
    learn_rate = _number("learn_rate", learn_rate)
    if not learn_rate > 0:
        raise option_error("learn_rate", f"must be > 0, got {learn_rate:g}")
    momentum = _number("momentum", momentum)
    if not 0.0 <= momentum < 1.0:
        raise option_error("momentum", f"must lie in [0, 1), got {momentum:g}")
    if momentum and optimizer == "adam":  # adam keeps its own moments: the value would be ignored
        raise option_error("momentum", f"{momentum:g} applies to {{optimizer}} sgd; adam has moments of its own",
                           others=["optimizer"])
    l2_penalty = _number("l2_penalty", l2_penalty)
    if l2_penalty < 0:
        raise option_error("l2_penalty", f"must be >= 0, got {l2_penalty:g}")
    minibatch_size = _integer("minibatch_size", minibatch_size, 1)
    randomizer_size = _integer("randomizer_size", randomizer_size, 1)
    max_epochs = _integer("max_epochs", max_epochs, 0)
    min_epochs = _integer("min_epochs", min_epochs, 0)
    if min_epochs > max_epochs:
        raise option_error("min_epochs", f"is {min_epochs}, more than {{max_epochs}} ({max_epochs})",
                           others=["max_epochs"])
    keep_lr_epochs = _integer("keep_lr_epochs", keep_lr_epochs, 0)
    for name, v in (("start_halving_impr", start_halving_impr), ("end_halving_impr", end_halving_impr)):
        if _number(name, v) < 0:
            raise option_error(name, f"must be >= 0 (a relative improvement), got {v:g}")
    start_halving_impr, end_halving_impr = float(start_halving_impr), float(end_halving_impr)
    halving_factor = _number("halving_factor", halving_factor)
    if not 0.0 < halving_factor < 1.0:
        raise option_error("halving_factor", f"must lie in (0, 1), got {halving_factor:g}")
    if cv_feats is not None and cv_fraction is not None:
        raise option_error("cv_fraction", "applies only without {cv_feats}: it holds out a part of the training "
                                          "features, and held-out features were given", others=["cv_feats"])
    cv_fraction = 0.1 if cv_fraction is None else _number("cv_fraction", cv_fraction)
    if not 0.0 < cv_fraction < 1.0:
        raise option_error("cv_fraction", f"must lie in (0, 1), got {cv_fraction:g}")
    if cv_labels is not None and cv_feats is None:
        raise option_error("cv_labels", "are the labels of {cv_feats}, and none were given: without them the "
                                        "cross-validation part is taken from the training features, with their "
                                        "labels", others=["cv_feats"])
    seed = _integer("seed", seed, 0)
    read_ahead = _integer("read_ahead", read_ahead, 0)
    checkpoint_every = _integer("checkpoint_every", checkpoint_every, 0)
    resume = _flag("resume", resume)
    if progress is not None:
        progress = _flag("progress", progress)
    if log is not None and not callable(log):
        raise option_error("log", f"must be a callable taking one line of text (e.g. print), got "
                                  f"{type(log).__name__}")
    if resume and checkpoint_dir is None:
        raise option_error("resume", "needs a checkpoint folder to resume from")
    if checkpoint_every and checkpoint_dir is None:
        raise option_error("checkpoint_every", "needs a checkpoint folder to save into")
    if binary is not None:
        binary = _flag("binary", binary)
    check_write_options(binary, dialect, digits)  # the writer's checks now, not after training
    _check_output(output)
    engine = _choose_engine(engine, device, precision)
    if student is _CHECK_ONLY:
        raise _Checked

    t_model = _model("student", student)
    from ..specialists import Ensemble  # (specialists imports this package)
    if isinstance(teacher, Ensemble) or (isinstance(teacher, (list, tuple))
                                         and any(isinstance(t, Ensemble) for t in teacher)):
        raise option_error("teacher", "is an Ensemble: give it as {teacher_ensemble}", others=["teacher_ensemble"])
    teacher_list = [] if teacher is None else [t if is_logits_teacher(t) else _model("teacher", t) for t in (
        teacher if isinstance(teacher, (list, tuple)) else [teacher])]
    if any(is_logits_teacher(t) for t in teacher_list) and len(teacher_list) > 1:
        raise option_error("teacher", "a logits teacher (an object with logits()) gives the soft targets alone: "
                                      "give it as the only teacher")
    runner = _ensemble_runner(teacher, teacher_ensemble, top_n, tolerance, max_iterations, "teacher",
                              "teacher_ensemble", model_required=False)
    ensemble = None if runner is None else runner.ensemble
    has_teacher = bool(teacher_list) or ensemble is not None
    if hint_weight > 0:
        if minibatch_size < 2:
            raise option_error("minibatch_size", f"must be at least 2 with {{hint_weight}} > 0 (got {minibatch_size}): "
                                                 "the hint term divides by the teacher's activation variance over "
                                                 "the minibatch", others=["hint_weight"])
        if ensemble is not None:
            raise option_error("hint_weight", "matches the activations of one teacher model, and the teacher is an "
                                              "ensemble ({teacher_ensemble})", others=["teacher_ensemble"])
        if len(teacher_list) == 1 and is_logits_teacher(teacher_list[0]):
            raise option_error("hint_weight", "matches the activations of one {teacher} model, and the teacher "
                                              "gives only its logits", others=["teacher"])
        if len(teacher_list) != 1:
            raise option_error("hint_weight", f"matches the activations of one {{teacher}} model, and "
                                              f"{len(teacher_list)} {'was' if len(teacher_list) == 1 else 'were'} "
                                              "given", others=["teacher"])
    dist = Dist.from_env()
    if dist is not None and engine != "torch":
        raise option_error("engine", f"must be torch: WORLD_SIZE is {dist.world} (torchrun), and several "
                                     "processes train with the torch engine only")
    if not has_teacher and labels is None:
        raise Error("nothing to learn from: give at least one teacher, or labels")
    # Options of the soft targets, which a teacher gives: without one they would be ignored.
    if hard_weight is not None and hard_weight != 1.0 and not has_teacher:
        raise option_error("hard_weight", f"{hard_weight:g} weighs the labels against the soft targets of a "
                                          "{teacher}, and none was given (the loss is the labels' alone)",
                           others=["teacher"])
    if average_logits and len(teacher_list) < 2:
        raise option_error("average_logits", f"averages the logits of several {{teacher}} models, and "
                                             f"{len(teacher_list)} {'was' if len(teacher_list) == 1 else 'were'} given",
                           others=["teacher"])
    if hard_weight is None:
        hard_weight = 1.0 if not has_teacher else (0.1 if labels is not None else 0.0)
    if hard_weight > 0 and labels is None:
        raise option_error("hard_weight", f"{hard_weight:g} > 0 needs labels")
    randomizer_size = max(randomizer_size, minibatch_size)

    comps = [c.copy() for c in t_model.components]
    teacher_models: List[Any] = [t if is_logits_teacher(t) else _load(t) for t in teacher_list]
    ft_model = _load(feature_transform) if feature_transform is not None else None
    if runner is not None and ensemble is not None:
        ft_model = ensemble.feature_transform_for(ft_model, "teacher_ensemble")
        teacher_models = [LogitsTeacher(ensemble.generalist.input_dim, ensemble.num_classes, runner.logits,
                                        "teacher ensemble", fingerprint=ensemble_fingerprint(ensemble))]
    hints = hint_pairs(comps, teacher_models[0], hint_layers) if hint_weight > 0 else []
    opts = train_options(optimizer, temperature=temperature, hard_weight=hard_weight, average_logits=average_logits,
                         momentum=momentum, l2_penalty=l2_penalty, hint_weight=hint_weight)
    if dist is not None:
        dist.start(dist.device(device))
    eng: Optional[Union[CoreEngine, TorchEngine]] = None
    try:
        if engine == "core":
            eng = CoreEngine(comps, teacher_models, ft_model, opts, hints=hints)
        else:
            from .engine_torch import TorchEngine
            eng = TorchEngine(comps, teacher_models, ft_model, opts, hints=hints, device=device, precision=precision,
                              dist=dist)
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
                    comps[-1].output_dim, lab, cv_lab, need_labels=not has_teacher, host=eng.host,
                    read_ahead=int(read_ahead), rank=dist.rank if dist else 0, world=dist.world if dist else 1)
        sched = ScheduleOptions(learn_rate=float(learn_rate), minibatch_size=int(minibatch_size),
                                randomizer_size=int(randomizer_size), max_epochs=int(max_epochs),
                                min_epochs=int(min_epochs), keep_lr_epochs=int(keep_lr_epochs),
                                start_halving_impr=float(start_halving_impr), end_halving_impr=float(end_halving_impr),
                                halving_factor=float(halving_factor), seed=int(seed), has_teachers=has_teacher,
                                hints=hint_weight > 0)
        ckpt = None
        if checkpoint_dir is not None:
            unknown = [t for t in teacher_models if is_logits_teacher(t) and getattr(t, "fingerprint", None) is None]
            if unknown:  # a resumed run could not tell whether it learns from the same teacher
                raise option_error("checkpoint_dir", f"needs a teacher that says what it is: the {{teacher}} "
                                                     f"({type(unknown[0]).__name__}) has no fingerprint attribute "
                                                     "(a JSON-able value identifying its logits) for the checkpoints",
                                   others=["teacher"])
            # Everything that decides the trained model, save --max-epochs (a run may go on).
            options = {k: v for k, v in dataclasses.asdict(sched).items()
                       if k not in ("max_epochs", "has_teachers", "hints")}
            fingerprint = dict(
                options, **opts.fingerprint(), engine=eng.name, device=eng.device.split(":")[0],
                precision=eng.precision, ranks=eng.world, cv_fraction=float(cv_fraction),
                student=model_fingerprint(t_model),
                teachers=[getattr(t, "fingerprint", type(t).__name__) if is_logits_teacher(t) else model_fingerprint(t)
                          for t in teacher_models],
                hints=None if not hints else dict(weight=as_written(hint_weight), layers=[list(h) for h in hints]),
                feature_transform=None if ft_model is None else model_fingerprint(ft_model),
                feats=data_fingerprint(feats), cv_feats=None if cv_feats is None else data_fingerprint(cv_feats),
                labels=None if labels is None else data_fingerprint(labels),
                cv_labels=None if cv_labels is None else data_fingerprint(cv_labels))
            ckpt = Checkpoints(str(checkpoint_dir), fingerprint, writer=writer)
            if not resume and ckpt.any():
                raise option_error("checkpoint_dir", f"{checkpoint_dir} already holds checkpoints of a run: give "
                                                     "{resume} to continue it, or another (or an empty) folder",
                                   others=["resume"])
        try:
            out = run(eng, data, sched, Progress(unit="frames", enabled=progress if writer else False), emit,
                      checkpoints=ckpt, resume=bool(resume), checkpoint_every=int(checkpoint_every))
        finally:
            if runner is not None:
                runner.warn_unconverged()

        result = Model(eng.result(), binary=t_model.binary, dialect=t_model.dialect, source=t_model.source)
        report = DistillReport(epochs=out.epochs, best_epoch=out.best_epoch, stopped=out.stopped,
                               temperature=float(temperature), hard_weight=float(hard_weight),
                               teachers=len(teacher_models), cv_frames=out.cv_frames,
                               teacher_ensemble=None if ensemble is None else
                               f"1 generalist + {len(ensemble.specialists)} specialists",
                               hint_weight=float(hint_weight),
                               cv_source={"cv-feats": "--cv-feats", "hash": f"{cv_fraction:g} of the utterances",
                                          "tail": f"last {cv_fraction:g} of each utterance"}[data.split],
                               skipped_utterances=len(data.skipped), unlabelled_utterances=len(data.unlabelled),
                               engine=eng.name, device=eng.device, precision=eng.precision, ranks=eng.world,
                               error=None if out.error is None else str(out.error))
        if out.error is not None and out.best_epoch == 0:
            raise _nothing_accepted(out.error, output)  # no epoch improved on the student: nothing worth writing
        emit(report.summary())
        written = None
        if writer and output is not None and (out.best_epoch > 0 or (out.interrupted is None and out.error is None)):
            write(result, output, binary=binary, dialect=dialect, digits=digits)  # result: the student's form
            written = output
        if out.error is not None:
            raise _stopped(out.error, result, report, written)
        if out.interrupted is not None:
            if output is not None:
                emit(f"interrupted: the best model so far (epoch {out.best_epoch}) was written to {output}"
                     if out.best_epoch > 0 else f"interrupted before an epoch improved: {output} not written")
            raise out.interrupted
        return result, report
    finally:
        if eng is not None:
            eng.close()
        if dist is not None:
            dist.stop()


_CHECK_ONLY = object()  # a student that stops distill() once its options are checked


class _Checked(Exception):
    pass


def check_options(**options: Any) -> None:
    """Checks the options of :func:`distill` (its keywords) as it does before reading any model
    or data, raising the same errors: for callers that do work of their own first
    (:func:`svdistill.specialists.specialists` clusters before it trains)."""
    try:
        distill(_CHECK_ONLY, None, **options)  # type: ignore[arg-type]  # a sentinel student, no data
    except _Checked:
        return


class TrainingStopped(Error):
    """Training stopped early (it diverged at every learning rate tried, or the data failed in
    a later epoch) after an epoch had improved the student: ``model`` is the best model of the
    epochs before, ``report`` the table up to the stop, ``written`` where the model was written
    (``output``; None without one). The message is the cause's, and says so."""

    model: Model
    report: DistillReport
    written: Optional[PathOrFile]
    cause: Error  # why training stopped, as raised (the message without what was kept)


def _stopped(cause: Error, model: Model, report: DistillReport, written: Optional[PathOrFile]) -> TrainingStopped:
    where = (f"was written to {written}" if isinstance(written, (str, os.PathLike)) else
             "was written" if written is not None else "is the exception's .model")
    tail = f"; training stopped early: the best model so far (epoch {report.best_epoch}) {where}"
    e = TrainingStopped(f"{cause}{tail}")
    e.model, e.report, e.written, e.cause = model, report, written, cause
    if getattr(cause, "option", None):  # said as the command's flag on the command line
        # option_error's attributes (errors.py): set on instances, declared by no class.
        e.option, e.detail = cause.option, f"{cause.detail}{tail}"  # type: ignore[attr-defined]
        e.others = getattr(cause, "others", ())  # type: ignore[attr-defined]
    return e


def _nothing_accepted(cause: Error, output: Optional[PathOrFile]) -> Error:
    """``cause`` (same class, same option), saying that no epoch was accepted and nothing written."""
    tail = "; no epoch improved on the student" + (f", so {output} was not written" if isinstance(
        output, (str, os.PathLike)) else ", so nothing was written" if output is not None else "")
    e = type(cause)(f"{cause}{tail}")
    if getattr(cause, "option", None):
        # option_error's attributes (errors.py): set on instances, declared by no class.
        e.option, e.detail = cause.option, f"{cause.detail}{tail}"  # type: ignore[attr-defined]
        e.others = getattr(cause, "others", ())  # type: ignore[attr-defined]
    return e


def _number(name: str, value: Any) -> float:
    """``value`` as a finite float (ints and numpy scalars are numbers; strings and bools are not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise option_error(name, f"must be a number, got {value!r} ({type(value).__name__})")
    f = float(value)
    if not math.isfinite(f):
        raise option_error(name, f"must be a finite number, got {f}")
    if abs(f) > float(np.finfo(np.float32).max):  # the core holds options as float32
        raise option_error(name, f"must lie within float32's range (|x| <= 3.4e38), got {f:g}")
    return f


def _integer(name: str, value: Any, lo: int) -> int:
    """``value`` as an int >= ``lo`` (an integral float such as 256.0 is one)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)) or int(value) != value or value < lo:  # type: ignore[call-overload]  # numbers.Real: no __int__ in typeshed
        raise option_error(name, f"must be an integer >= {lo}, got {value!r}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise option_error(name, f"must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def _model(name: str, model: Any) -> Model:
    if not isinstance(model, (Model, str, os.PathLike)) and not hasattr(model, "read"):
        raise option_error(name, f"expected a Model, a path or a binary file object, got {type(model).__name__}")
    return _load(model)


def _check_output(output: Any) -> None:
    """Fail before hours of training, not after: ``output`` must be writable where it says."""
    if output is None or (hasattr(output, "write") and not isinstance(output, (str, os.PathLike))):
        return
    if not isinstance(output, (str, os.PathLike)):
        raise option_error("output", f"expected a path, '-' or a binary file object, got {type(output).__name__}")
    try:
        output_target(output)  # what every writer checks: folder, links, not a directory
    except Error as e:
        raise option_error("output", str(e)) from None


def _choose_engine(engine: Optional[str], device: Any, precision: str) -> str:
    """The engine for these options: core on the CPU unless told otherwise; a CUDA device means torch."""
    if engine not in (None, "core", "torch"):
        raise option_error("engine", f"must be 'core' or 'torch', got {engine!r}")
    if precision not in ("fp32", "tf32", "bf16"):
        raise option_error("precision", f"must be 'fp32', 'tf32' or 'bf16', got {precision!r}")
    if device is not None and not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:[0-9]+)?", device)):
        raise option_error("device", f"must be cpu, cuda or cuda:N, got {device!r}")
    on_cuda = device is not None and device.startswith("cuda")
    if engine == "core" and on_cuda:
        raise option_error("device", f"{device}: the core engine runs on the CPU; use the torch engine")
    if precision != "fp32":
        # Both engines train in fp32 on the CPU: another precision there would be ignored.
        if engine == "core":
            raise option_error("precision", f"{precision}: the core engine trains in fp32")
        if not on_cuda:
            raise option_error("precision", f"{precision} needs a CUDA device ({{device}} cuda or cuda:N): "
                                            "on the CPU the torch engine trains in fp32",
                               others=["device"])
    return engine or ("torch" if on_cuda else "core")
