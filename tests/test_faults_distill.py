"""distill as a new user meets it: what it keeps when training stops early, what it trains on,
what it says about bad data and bad options (issue 19: items 2, 4, 5, 11-14)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest

import svdistill
from conftest import assert_clean_cli_error, signal_once_accepted
from svdistill import Component, Model
from svdistill.distill import TrainingStopped, distill
from svdistill.distill.data import cv_by_hash

ENGINES = ["core", pytest.param("torch", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="needs torch"))]


def _affine(rng, i, o, scale=0.3):
    return Component.affine(rng.normal(0, scale, (o, i)).astype(np.float32),
                            rng.normal(0, 0.1, o).astype(np.float32))


def _problem(seed=1, utterances=50, frames=40, classes=4, hidden=None):
    """Gaussian clusters in 10 dims with labels, and a student for them (softmax regression
    without ``hidden``)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, 10))
    feats, labels = {}, {}
    for u in range(utterances):
        y = rng.integers(0, classes, frames)
        feats[f"u{u}"] = (centers[y] + rng.normal(size=(frames, 10))).astype(np.float32)
        labels[f"u{u}"] = y
    if hidden:
        comps = [_affine(rng, 10, hidden), Component.activation("Sigmoid", hidden), _affine(rng, hidden, classes)]
    else:
        comps = [_affine(rng, 10, classes)]
    return feats, labels, Model(comps + [Component.activation("Softmax", classes)])


class Passes(Mapping):
    """Features that change after ``after`` passes over them, as a command re-run every epoch
    (``ark:cmd |``) may give other data: a dict that knows which pass is reading it."""

    def __init__(self, feats: Dict[str, np.ndarray], after: int, change: Callable[[Dict], Dict]) -> None:
        self.first, self.after, self.change = feats, after, change
        self.passes = 0
        self.now = feats

    def __iter__(self):
        self.passes += 1
        self.now = self.first if self.passes <= self.after else self.change(self.first)
        return iter(list(self.now))

    def __getitem__(self, key):
        return self.now[key]

    def __len__(self):
        return len(self.now)


# Passes over the training features before epoch 2: initial CV (every key of a hash split),
# epoch 1's training, epoch 1's CV.
BEFORE_EPOCH_2 = 3


# ------------------------------------------------------------ data loss

@pytest.mark.parametrize("engine", ENGINES)
def test_giving_up_on_divergence_writes_the_best_model(engine, tmp_path):
    feats, labels, model = _problem()
    huge = Passes(feats, BEFORE_EPOCH_2, lambda f: {k: v * -1e6 for k, v in f.items()})
    lines = []
    with pytest.raises(TrainingStopped) as info:
        distill(model, huge, labels=labels, minibatch_size=20, learn_rate=0.01, max_epochs=5, engine=engine,
                output=tmp_path / "o.nnet", log=lines.append)
    e = info.value
    assert "learn_rate 0.01 is too large: training diverges" in str(e)
    assert str(e).endswith(f"the best model so far (epoch 1) was written to {tmp_path / 'o.nnet'}")
    assert e.report.best_epoch == 1 and e.report.epochs[1].accepted
    assert sum(r.diverged for r in e.report.epochs) == 11 and e.report.error.startswith("learn_rate")
    assert "stopped early in epoch" in lines[-1]  # the table ends with the reason
    written = svdistill.read(tmp_path / "o.nnet")
    np.testing.assert_array_equal(written.components[0].params["linearity"],
                                  e.model.components[0].params["linearity"])
    assert not np.array_equal(written.components[0].params["linearity"],
                              model.components[0].params["linearity"])


def test_data_failing_in_a_later_epoch_keeps_the_best_model(tmp_path):
    feats, labels, model = _problem()
    fewer = Passes(feats, BEFORE_EPOCH_2, lambda f: dict(list(f.items())[:10]))
    with pytest.raises(TrainingStopped, match="50 utterances when first read, 10 when read again for epoch 2") \
            as info:
        distill(model, fewer, labels=labels, minibatch_size=20, max_epochs=5, output=tmp_path / "o.nnet")
    assert info.value.report.best_epoch == 1 and (tmp_path / "o.nnet").exists()


def test_failure_before_any_improvement_writes_nothing(tmp_path):
    feats, labels, model = _problem()
    with pytest.raises(svdistill.Error, match="learn_rate 1e\\+09 is too large") as info:
        distill(model, feats, labels=labels, minibatch_size=20, learn_rate=1e9, output=tmp_path / "o.nnet")
    assert not isinstance(info.value, TrainingStopped)
    assert str(info.value).endswith(f"no epoch improved on the student, so {tmp_path / 'o.nnet'} was not written")
    assert info.value.option == "learn_rate" and info.value.detail.endswith("was not written")
    assert not (tmp_path / "o.nnet").exists()


def test_any_interrupt_keeps_the_best_model(tmp_path):
    """SystemExit (what a signal handler may raise) is an interrupt as Ctrl-C is."""
    feats, labels, model = _problem()

    def log(line):
        if line.rstrip().endswith("accepted"):
            raise SystemExit(143)

    with pytest.raises(SystemExit):
        distill(model, feats, labels=labels, minibatch_size=20, max_epochs=50, log=log,
                start_halving_impr=0, end_halving_impr=0, output=tmp_path / "o.nnet")
    assert svdistill.read(tmp_path / "o.nnet").components[0].input_dim == 10


def _cli_problem(tmp_path, hidden=16):
    import kaldiio
    feats, labels, model = _problem(utterances=60, frames=100, hidden=hidden)
    model.write(tmp_path / "s.nnet")
    kaldiio.save_ark(str(tmp_path / "f.ark"), feats)
    kaldiio.save_ark(str(tmp_path / "ali.ark"), {k: v.astype(np.int32) for k, v in labels.items()})
    return model


def test_sigterm_keeps_the_best_model(tmp_path):
    model = _cli_problem(tmp_path)
    out = tmp_path / "o.nnet"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    rc, err = signal_once_accepted(
        [sys.executable, "-m", "svdistill", "distill", "--labels", f"ark:{tmp_path / 'ali.ark'}",
         "--max-epochs", "500", "--start-halving-impr", "0", "--end-halving-impr", "0",
         "--learn-rate", "0.0001", "--minibatch-size", "16", "--report", str(tmp_path / "r.json"),
         str(tmp_path / "s.nnet"), f"ark:{tmp_path / 'f.ark'}", str(out)], signal.SIGTERM, env)
    assert rc == 128 + signal.SIGTERM, err
    assert "the best model so far (epoch" in err and "Traceback" not in err, err
    assert [c.kind for c in svdistill.read(out)] == [c.kind for c in model]


def test_cli_exit_status_3_when_training_stopped_early(tmp_path, run_cli):
    """A feature command whose output changes after epoch 1 (scaled by -1e6): the CLI writes the
    best model, the report, and says so with exit status 3."""
    _cli_problem(tmp_path, hidden=None)
    script = tmp_path / "feats.py"
    script.write_text(
        "import os, sys, kaldiio\n"
        f"n = len(os.listdir({str(tmp_path / 'runs')!r}))\n"
        f"open(os.path.join({str(tmp_path / 'runs')!r}, str(n)), 'w').close()\n"
        f"d = dict(kaldiio.load_ark({str(tmp_path / 'f.ark')!r}))\n"
        f"kaldiio.save_ark(sys.stdout.buffer, {{k: v * (-1e6 if n >= {BEFORE_EPOCH_2} else 1) "
        "for k, v in d.items()})\n")
    (tmp_path / "runs").mkdir()
    proc = run_cli("distill", "--labels", f"ark:{tmp_path / 'ali.ark'}", "--minibatch-size", "16",
                   "--max-epochs", "4", "--report", tmp_path / "r.json", tmp_path / "s.nnet",
                   f"ark:{sys.executable} {script} |", tmp_path / "o.nnet", timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    last = err.splitlines()[-1]
    # stopped early is no error: the model was written, and the line says so
    assert last.startswith("svdistill: stopped early: --learn-rate 0.008 is too large"), last
    assert last.endswith(f"(the best model, epoch 1, was written to {tmp_path / 'o.nnet'})"), last
    assert "svdistill: error" not in err and "training stopped early" not in last, err
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["best_epoch"] == 1 and report["error"].startswith("learn_rate")
    assert svdistill.read(tmp_path / "o.nnet")


# ------------------------------------------------------------ wrong results

@pytest.mark.parametrize("engine", ENGINES)
def test_cv_feats_leave_every_training_frame_to_training(engine):
    feats, labels, model = _problem(utterances=50, frames=40)
    cv, cv_labels, _ = _problem(seed=2, utterances=10)
    _, rep = distill(model, feats, labels=labels, cv_feats=cv, cv_labels=cv_labels, minibatch_size=1,
                     max_epochs=1, engine=engine)
    assert rep.epochs[1].train_frames == 50 * 40 and rep.cv_frames == 10 * 40
    assert rep.cv_source == "--cv-feats"
    # A fraction of the training data to hold out, and held-out data: one of them is a mistake.
    with pytest.raises(svdistill.Error, match="cv_fraction applies only without cv_feats") as info:
        distill(model, feats, labels=labels, cv_feats=cv, cv_labels=cv_labels, cv_fraction=0.5, engine=engine)
    assert info.value.option == "cv_fraction"


# ---------------------------------------------- crashes and silent failures

def _training_key(keys, fraction=0.1):
    return next(k for k in keys if not cv_by_hash(k, fraction))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_teacher_that_outputs_nan_on_one_utterance_is_named_at_once(engine):
    feats, labels, model = _problem(hidden=8)
    teacher = Model([_affine(np.random.default_rng(3), 10, 4), Component.activation("Softmax", 4)])
    teacher.components[0].params["linearity"][...] *= 1e30  # finite, overflows on large inputs
    key = _training_key(feats)
    feats = dict(feats)
    feats[key] = feats[key].copy()
    feats[key][7] *= 1e10
    lines = []
    with pytest.raises(svdistill.Error, match=f"utterance {key}, frame 7: the teacher outputs nan"):
        distill(model, feats, teacher=teacher, minibatch_size=20, engine=engine, log=lines.append)
    assert not any("diverged" in line for line in lines)  # no halving of the learning rate first


@pytest.mark.parametrize("engine", ENGINES)
def test_a_feature_transform_that_overflows_is_named(engine):
    feats, labels, model = _problem()
    ft = Component.activation("Rescale", 10)
    ft.params["scale_data"][...] = 1e37
    ft.learn_rate_coef = 0.0
    key = next(k for k in feats if cv_by_hash(k, 0.1))  # in the CV part: the initial CV finds it
    feats = dict(feats)
    feats[key] = np.abs(feats[key]) * 0.01
    feats[key][3, 2] = 1e3
    with pytest.raises(svdistill.Error, match=f"utterance {key}, frame 3: the feature transform outputs inf"):
        distill(model, feats, labels=labels, feature_transform=Model([ft]), engine=engine)


def _nothing(kind, feats, labels):
    if kind == "no label matches":
        return feats, {"x" + k: v for k, v in labels.items()}, {}
    if kind == "all alignments too short":
        return feats, {k: v[:30] for k, v in labels.items()}, {}
    if kind == "empty dict":
        return {}, labels, {}
    if kind == "minibatch larger than the data":
        return feats, labels, {"minibatch_size": 100000}
    if kind == "re-read gives nothing":  # stdin, or a command reading it, for the second pass
        return Passes(feats, 1, lambda f: {}), labels, {}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("no label matches", "none of the 5 cross-validation utterances of features dict has usable labels "
                         "(needed without a teacher): 5 have no alignment of the same key"),
    ("all alignments too short", "5 have alignments more than 5 frames longer or shorter than the features "
                                 "(utterance 'u21': 30 labels, 40 frames)"),
    ("empty dict", "no cross-validation frames: features dict holds no utterances"),
    ("minibatch larger than the data", "minibatch_size is 100000, more than the 1,800 training frames"),
    ("re-read gives nothing", "50 utterances when first read, 0 when read again for epoch 1"),
])
@pytest.mark.parametrize("engine", ENGINES)
def test_no_frames_says_why(kind, message, engine):
    feats, labels, model = _problem()
    feats, labels, kw = _nothing(kind, feats, labels)
    with pytest.raises(svdistill.Error) as info:
        distill(model, feats, labels=labels, engine=engine, max_epochs=2, **kw)
    assert message in str(info.value)
    assert not isinstance(info.value, TrainingStopped)


# --------------------------------------------------------- messages and API

@pytest.mark.parametrize("kw, option, message", [
    ({"temperature": "2"}, "temperature", "must be a number, got '2' (str)"),
    ({"temperature": 0}, "temperature", "must be > 0, got 0"),
    ({"temperature": float("inf")}, "temperature", "must be a finite number"),
    ({"seed": "a"}, "seed", "must be an integer >= 0, got 'a'"),
    ({"seed": 1.5}, "seed", "must be an integer >= 0, got 1.5"),
    ({"log": 123}, "log", "must be a callable"),
    ({"l2_penalty": -1}, "l2_penalty", "must be >= 0, got -1"),
    ({"hard_weight": 2}, "hard_weight", "must lie in [0, 1], got 2"),
    ({"learn_rate": 0}, "learn_rate", "must be > 0, got 0"),
    ({"momentum": 1}, "momentum", "must lie in [0, 1), got 1"),
    ({"minibatch_size": True}, "minibatch_size", "must be an integer >= 1, got True"),
    ({"randomizer_size": 0}, "randomizer_size", "must be an integer >= 1"),
    ({"min_epochs": 5, "max_epochs": 2}, "min_epochs", "is 5, more than max_epochs (2)"),
    ({"start_halving_impr": -1}, "start_halving_impr", "must be >= 0"),
    ({"end_halving_impr": "0.1"}, "end_halving_impr", "must be a number"),
    ({"halving_factor": 1}, "halving_factor", "must lie in (0, 1)"),
    ({"cv_fraction": 1}, "cv_fraction", "must lie in (0, 1), got 1"),
    ({"checkpoint_every": -5}, "checkpoint_every", "must be an integer >= 0"),
    ({"checkpoint_every": 100}, "checkpoint_every", "needs a checkpoint folder to save into"),
    ({"resume": True}, "resume", "needs a checkpoint folder to resume from"),
    ({"progress": "yes"}, "progress", "must be True or False"),
    ({"dialect": "nnet3"}, "dialect", "must be 'kaldi' or 'pdnn'"),
    ({"digits": 7}, "digits", "must be 'shortest' or 'kaldi'"),
    ({"engine": "gpu"}, "engine", "must be 'core' or 'torch'"),
    ({"device": 0}, "device", "must be cpu, cuda or cuda:N, got 0"),
    ({"device": "cuda:x"}, "device", "must be cpu, cuda or cuda:N, got 'cuda:x'"),
    ({"device": "banana:7"}, "device", "must be cpu, cuda or cuda:N, got 'banana:7'"),
    ({"device": "tpu", "engine": "torch"}, "device", "must be cpu, cuda or cuda:N, got 'tpu'"),
    ({"precision": "bf16"}, "precision", "bf16 needs a CUDA device (device cuda or cuda:N)"),
    ({"precision": "tf32", "device": "cpu"}, "precision", "tf32 needs a CUDA device"),
    ({"precision": "bf16", "engine": "core"}, "precision", "bf16: the core engine trains in fp32"),
    ({"teacher": [123]}, "teacher", "expected a Model, a path or a binary file object, got int"),
    ({"hard_weight": 0.5, "labels": None, "teacher": "T"}, "hard_weight", "0.5 > 0 needs labels"),
    ({"cv_labels": "L"}, "cv_labels", "are the labels of cv_feats, and none were given"),
    ({"output": "/nonexistent-folder/o.nnet"}, "output", "the folder /nonexistent-folder does not exist"),
])
def test_bad_option_values_name_the_keyword(kw, option, message):
    feats, labels, model = _problem(utterances=10)
    kw = dict(kw)
    for k, v in kw.items():
        kw[k] = {"T": model, "L": labels}.get(v, v) if isinstance(v, str) else v
    kw.setdefault("labels", labels)
    kw.setdefault("max_epochs", 1)
    with pytest.raises(svdistill.Error) as info:
        distill(model, feats, **kw)
    assert info.value.option == option, str(info.value)
    assert str(info.value).startswith(f"{option} ") and message in str(info.value), str(info.value)
    assert "--" not in str(info.value)  # the API's words, not the command line's


def test_the_pdnn_binary_is_refused_before_training(tmp_path):
    feats, labels, model = _problem(utterances=10)
    lines = []
    with pytest.raises(svdistill.Error, match="(?i)pdnn"):
        distill(model, feats, labels=labels, binary=True, dialect="pdnn", output=tmp_path / "o", log=lines.append)
    assert lines == []  # refused before the initial cross-validation


def _distill_cli(tmp_path, run_cli, *args):
    """`svdistill distill` on the small labelled problem, with ``args`` added."""
    _cli_problem(tmp_path)
    return run_cli("distill", "--labels", f"ark:{tmp_path / 'ali.ark'}", *args, tmp_path / "s.nnet",
                   f"ark:{tmp_path / 'f.ark'}", tmp_path / "o.nnet")


@pytest.mark.parametrize("args, message", [
    (["--l2-penalty", "-1"], "--l2-penalty must be >= 0, got -1"),
    (["--hard-weight", "2"], "--hard-weight must lie in [0, 1], got 2"),
    (["--temperature", "0"], "--temperature must be > 0, got 0"),
    (["--min-epochs", "5", "--max-epochs", "2"], "--min-epochs is 5, more than --max-epochs (2)"),
    (["--cv-labels", "ark:ali"], "--cv-labels are the labels of --cv-feats, and none were given"),
    (["--cv-feats", "ark:cv", "--cv-fraction", "0.5"], "--cv-fraction applies only without --cv-feats"),
    (["--device", "banana:7"], "--device must be cpu, cuda or cuda:N, got 'banana:7'"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
    (["--precision", "bf16"], "--precision bf16 needs a CUDA device (--device cuda or cuda:N)"),
    (["--precision", "tf32", "--device", "cpu", "--engine", "torch"], "--precision tf32 needs a CUDA device"),
    (["--precision", "bf16", "--engine", "core"], "--precision bf16: the core engine trains in fp32"),
    (["--randomizer-size", "0"], "--randomizer-size must be an integer >= 1, got 0"),
    (["--checkpoint-every", "100"], "--checkpoint-every needs a checkpoint folder to save into"),
])
def test_cli_says_option_errors_with_its_flags(tmp_path, run_cli, args, message):
    assert_clean_cli_error(_distill_cli(tmp_path, run_cli, *args), message)


def test_cli_no_training_frames_says_why(tmp_path, run_cli):
    _cli_problem(tmp_path)
    proc = run_cli("distill", "--labels", f"ark:{tmp_path / 'ali.ark'}", "--minibatch-size", "100000",
                   tmp_path / "s.nnet", f"ark:{tmp_path / 'f.ark'}", tmp_path / "o.nnet", timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.splitlines()[-1].startswith("svdistill: error: --minibatch-size is 100000, more than the "), err
    assert "minibatch_size" not in err  # every option it names in the command line's words


def test_sigterm_while_the_reader_waits_on_a_feature_command(tmp_path):
    """The reading thread is blocked on a command's pipe (it printed its data, then stalls):
    SIGTERM stops the command and the run at once, and the best model is written."""
    model = _cli_problem(tmp_path, hidden=None)
    (tmp_path / "runs").mkdir()
    script = tmp_path / "feats.sh"
    # From epoch 2 on, the command stalls after its data, as a hung pipe or NFS read would.
    script.write_text(f"n=$(ls {tmp_path / 'runs'} | wc -l); touch {tmp_path / 'runs'}/$n\n"
                      f"cat {tmp_path / 'f.ark'}\n"
                      f"if [ $n -ge {BEFORE_EPOCH_2} ]; then sleep 60; fi\n")
    out = tmp_path / "o.nnet"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "svdistill", "distill", "--labels", f"ark:{tmp_path / 'ali.ark'}",
         "--minibatch-size", "16", "--max-epochs", "5", str(tmp_path / "s.nnet"),
         f"ark:sh {script} |", str(out)], stderr=subprocess.PIPE, env=env, text=True,
        start_new_session=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "accepted" in line:
                break
        import time
        deadline = time.monotonic() + 60
        while len(os.listdir(tmp_path / "runs")) <= BEFORE_EPOCH_2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the epoch-2 pass has read all the data and waits for the command's end
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=50)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert took < 10, f"{took:.1f} s after SIGTERM:\n{err}"
    assert "the best model so far (epoch 1)" in err and "Traceback" not in err, err
    assert [c.kind for c in svdistill.read(out)] == [c.kind for c in model]


def test_cli_divergence_before_any_accepted_epoch_says_nothing_was_written(tmp_path, run_cli):
    _cli_problem(tmp_path, hidden=None)
    proc = run_cli("distill", "--labels", f"ark:{tmp_path / 'ali.ark'}", "--minibatch-size", "16",
                   "--learn-rate", "1e9", tmp_path / "s.nnet", f"ark:{tmp_path / 'f.ark'}", tmp_path / "o.nnet",
                   timeout=300)
    line = proc.stderr.decode().splitlines()[-1]
    assert proc.returncode == 2, proc.stderr.decode()
    assert line.startswith("svdistill: error: --learn-rate 1e+09 is too large: training diverges"), line
    assert line.endswith(f"no epoch improved on the student, so {tmp_path / 'o.nnet'} was not written"), line
    assert not (tmp_path / "o.nnet").exists()


def test_a_pdnn_output_of_a_binary_student_is_pdnn_text(tmp_path):
    """dialect='pdnn' with the student's (binary) encoding resolves as write() resolves it:
    PDNN text, not a refusal (only binary=True with pdnn is refused, before training)."""
    feats, labels, model = _problem(utterances=10)
    model.write(tmp_path / "s.bin", binary=True)
    distill(str(tmp_path / "s.bin"), feats, labels=labels, dialect="pdnn", max_epochs=1,
            output=tmp_path / "o.txt", log=lambda line: None)
    m = svdistill.read(tmp_path / "o.txt")
    assert m.dialect == "pdnn" and not m.binary


# ---------------------------------------------------------------- second new-user trial


def test_option_error_says_every_keyword_it_names_in_the_callers_words():
    """An option error naming a second option: the API says keywords, the command line flags."""
    from svdistill.errors import option_error, option_text
    e = option_error("min_epochs", "is 5, more than {max_epochs} (2)", others=["max_epochs"])
    assert str(e) == "min_epochs is 5, more than max_epochs (2)"
    assert option_text(e, lambda k: "--" + k.replace("_", "-")) == "--min-epochs is 5, more than --max-epochs (2)"
    plain = option_error("rank", "must be > 0, got {x}")  # braces in a detail without others stay as they are
    assert str(plain) == "rank must be > 0, got {x}" and option_text(plain, str.upper) == "RANK must be > 0, got {x}"


def test_too_few_frames_for_a_minibatch_says_the_api_keyword_in_the_api():
    feats, labels, model = _problem(utterances=4, frames=10)
    with pytest.raises(svdistill.Error) as info:
        distill(model, feats, labels=labels, minibatch_size=10000, max_epochs=1)
    assert info.value.option == "minibatch_size" and "--" not in str(info.value), str(info.value)


@pytest.mark.parametrize("kw, message", [
    ({"optimizer": "adam", "momentum": 0.9}, "momentum 0.9 applies to optimizer sgd; adam has moments of its own"),
    ({"average_logits": True, "teacher": ["T"]}, "average_logits averages the logits of several teacher models, "
                                                 "and 1 was given"),
    ({"average_logits": True}, "average_logits averages the logits of several teacher models, and 0 were given"),
    ({"hard_weight": 0.5}, "hard_weight 0.5 weighs the labels against the soft targets of a teacher, and none was "
                           "given"),
])
def test_options_that_would_do_nothing_are_refused(kw, message):
    feats, labels, model = _problem(utterances=10)
    kw = {k: ([model] if v == ["T"] else v) for k, v in kw.items()}
    lines = []
    with pytest.raises(svdistill.Error) as info:
        distill(model, feats, labels=labels, max_epochs=1, log=lines.append, **kw)
    assert str(info.value).startswith(message) and lines == [], str(info.value)


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum 0.9 applies to --optimizer sgd"),
    (["--average-logits"], "--average-logits averages the logits of several --teacher models, and 0 were given"),
    (["--hard-weight", "0.5"], "--hard-weight 0.5 weighs the labels against the soft targets of a --teacher"),
])
def test_options_that_would_do_nothing_are_refused_cli(tmp_path, run_cli, args, message):
    assert_clean_cli_error(_distill_cli(tmp_path, run_cli, *args), message)
    assert not (tmp_path / "o.nnet").exists()


@pytest.mark.parametrize("value,message", [
    (1e-46, "temperature must be at least 1.4e-45 (the core holds it as a float32), got 1e-46"),
    (1e39, "temperature must lie within float32's range (|x| <= 3.4e38), got 1e+39")])
def test_a_temperature_the_core_cannot_hold_is_refused(value, message):
    """The core holds the options as float32: 1e-46 would be 0 (an infinite loss) and 1e39 inf."""
    rng = np.random.default_rng(0)
    t = svdistill.read(Path(__file__).resolve().parents[1] / "examples" / "small.nnet")
    feats = {f"u{i}": rng.standard_normal((20, 40)).astype(np.float32) for i in range(4)}
    with pytest.raises(svdistill.Error) as e:
        svdistill.distill(t, feats, teacher=t, temperature=value, max_epochs=1)
    assert str(e.value) == message
