"""Each option is declared once: every command-line flag is its API keyword with dashes and
has the API's default, and the API's defaults of training come from the core's option structs.
"""
from __future__ import annotations

import argparse
import inspect
import warnings
from typing import Callable, Dict, List

import numpy as np
import pytest

from svdistill import _core, cli
from svdistill.compare import compare
from svdistill.compress import compress
from svdistill.distill import distill
from svdistill.distill.engine import as_written
from svdistill.export import export
from svdistill.forward import forward_archive
from svdistill.info import info
from svdistill.io import write
from svdistill.specialists import specialists
from svdistill.spectrum import spectrum

# The API function each command calls with its options.
COMMANDS: Dict[str, Callable] = {
    "info": info, "copy": write, "spectrum": spectrum, "forward": forward_archive, "compare": compare,
    "distill": distill, "export": export, "compress": compress, "specialists": specialists,
}

# Commands whose API function passes its **options on to another: their flags are keywords
# of either (the function's own first), with that keyword's default.
PASSED_ON: Dict[str, Callable] = {"specialists": distill}

# Flags of the command line only, and why the API has no such keyword.
CLI_ONLY = {
    ("info", "json"): "how the command prints the dict info() returns",
    ("spectrum", "json"): "how the command prints the dict spectrum() returns",
    ("spectrum", "plot"): "a picture of what spectrum() returns (svdistill.plot)",
    ("spectrum", "threads"): "the process's thread count (svdistill.linalg.set_num_threads)",
    ("forward", "threads"): "the process's thread count (svdistill.linalg.set_num_threads)",
    ("compare", "json"): "how the command prints the dict compare() returns",
    ("compare", "threads"): "the process's thread count (svdistill.linalg.set_num_threads)",
    ("distill", "threads"): "the process's thread count (linalg.set_num_threads, torch.set_num_threads)",
    ("distill", "report"): "a file of what distill() returns (DistillReport.to_dict())",
    ("compress", "threads"): "the process's thread count (svdistill.linalg.set_num_threads)",
    ("compress", "report"): "a file of what compress() returns (CompressReport.to_dict())",
    ("compress", "plot"): "a picture of the spectra compress() returns with spectra=True (svdistill.plot)",
    ("compress", "check"): "runs svdistill.compare() on the written model afterwards",
    ("specialists", "threads"): "the process's thread count (linalg.set_num_threads, torch.set_num_threads)",
    ("specialists", "report"): "a file of what specialists() returns (each specialist's DistillReport.to_dict())",
}

# Positional arguments (read by position in the API too) whose API parameter has another
# name; copy reads its input with iter_components(src) and writes it with write().
POSITIONAL_NAMES = {
    ("info", "model"): "src",
    ("copy", "input"): None,
    ("copy", "output"): "dst",
    ("forward", "feats"): "feats_rspecifier",
    ("forward", "output"): "out_wspecifier",
    ("compress", "input"): "model",
}


# Old names the API still takes, for one release (with a DeprecationWarning): no flag's.
DEPRECATED = {("distill", "teachers"): "teacher", ("distill", "l2"): "l2_penalty",
              ("compress", "n_oversamples"): "oversamples", ("compress", "random_state"): "seed"}

# Keywords of an API function that its command has no flag for, and why.
API_ONLY = {
    ("copy", "model"): "INPUT, read component by component (iter_components) rather than given as a Model",
    ("spectrum", "fractions"): "the energy fractions of the returned dict; the command prints the default ones",
    ("forward", "progress"): "a callback; the command shows a progress line when stderr is a terminal",
    ("distill", "progress"): "the command shows a progress line when stderr is a terminal",
    ("distill", "log"): "a callback; the command prints the table to stderr",
    ("compress", "progress"): "the command shows a progress line when stderr is a terminal",
    ("compress", "spectra"): "the command's --plot asks for them",
}


def _subparsers(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _keywords(command: str) -> Dict[str, inspect.Parameter]:
    """The keywords a command's options may set: its API function's, and those of the function
    its **options go to (the function's own first)."""
    params = dict(inspect.signature(PASSED_ON[command]).parameters) if command in PASSED_ON else {}
    params.update(inspect.signature(COMMANDS[command]).parameters)
    return params


def option_problems(parser: argparse.ArgumentParser) -> List[str]:
    """Every flag whose dest is no keyword of its command's API function (and is not listed
    as the command line's own), and every default that differs from the API's."""
    problems = []
    commands = _subparsers(parser)
    for command, func in COMMANDS.items():
        params = _keywords(command)
        for action in commands[command]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            key = (command, action.dest)
            if not action.option_strings:
                name = POSITIONAL_NAMES.get(key, action.dest)
                if key not in POSITIONAL_NAMES and name not in params:
                    problems.append(f"{command} {action.dest.upper()}: no parameter of {func.__name__}() "
                                    f"is called {action.dest!r}")
                continue
            flag = action.option_strings[0]
            if key in CLI_ONLY:
                continue
            if key in DEPRECATED:
                problems.append(f"{command} {flag}: {action.dest!r} is a deprecated keyword of {func.__name__}() "
                                f"(now {DEPRECATED[key]!r})")
                continue
            param = params.get(action.dest)
            owner = func if action.dest in inspect.signature(func).parameters else PASSED_ON.get(command, func)
            if param is None or param.kind not in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
                also = f" (nor {PASSED_ON[command].__name__}(), which its **options go to)" if command in PASSED_ON \
                    else ""
                problems.append(f"{command} {flag}: {func.__name__}(){also} has no keyword {action.dest!r}")
                continue
            if flag != "--" + action.dest.replace("_", "-") and not flag.startswith("--no-"):
                problems.append(f"{command} {flag}: the flag of keyword {action.dest!r} is "
                                f"--{action.dest.replace('_', '-')}")
            want = None if param.default is param.empty else param.default
            if action.default != want or type(action.default) is not type(want):
                problems.append(f"{command} {flag}: default {action.default!r}, {owner.__name__}(): {want!r}")
    return problems


def test_every_flag_is_its_api_keyword_with_its_default():
    problems = option_problems(cli.build_parser())
    assert not problems, "\n".join(problems)


def test_every_api_keyword_has_its_flag():
    """The other direction: an option the API gained is on the command line too (or listed in
    API_ONLY, saying why not)."""
    commands = _subparsers(cli.build_parser())
    missing = []
    for command, func in COMMANDS.items():
        dests = {a.dest for a in commands[command]._actions}
        dests |= {v for (c, _), v in POSITIONAL_NAMES.items() if c == command and v}
        for name, p in inspect.signature(func).parameters.items():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or (command, name) in DEPRECATED:
                continue
            if name not in dests and (command, name) not in API_ONLY:
                missing.append(f"{command}: {func.__name__}() has {name!r}, the command no --{name.replace('_', '-')}")
    stale = [k for k in API_ONLY if k[1] not in inspect.signature(COMMANDS[k[0]]).parameters]
    assert not missing and not stale, "\n".join(missing + [f"API_ONLY lists {k}, which is no keyword" for k in stale])


def test_the_command_line_only_flags_exist():
    commands = _subparsers(cli.build_parser())
    for command, dest in list(CLI_ONLY) + list(POSITIONAL_NAMES):
        assert any(a.dest == dest for a in commands[command]._actions), (command, dest)


def test_a_flag_with_another_name_or_default_is_seen():
    parser = cli.build_parser()
    distill_parser = _subparsers(parser)["distill"]
    distill_parser.add_argument("--l2", type=float, default=0.0)
    distill_parser.add_argument("--learning-rate", type=float)
    temperature = next(a for a in distill_parser._actions if a.dest == "temperature")
    temperature.default = 1.0
    forward_parser = _subparsers(parser)["forward"]
    forward_parser.add_argument("--priors-scale", dest="prior_scale", type=float, default=1.0)
    specialists_parser = _subparsers(parser)["specialists"]
    specialists_parser.add_argument("--num-clusters", type=int)
    next(a for a in specialists_parser._actions if a.dest == "halving_factor").default = 0.7
    next(a for a in specialists_parser._actions if a.dest == "overlap").default = 1
    problems = option_problems(parser)
    assert "distill --l2: 'l2' is a deprecated keyword of distill() (now 'l2_penalty')" in problems, problems
    assert "distill --learning-rate: distill() has no keyword 'learning_rate'" in problems, problems
    assert "distill --temperature: default 1.0, distill(): 2.0" in problems, problems
    assert "forward --priors-scale: the flag of keyword 'prior_scale' is --prior-scale" in problems, problems
    assert ("specialists --num-clusters: specialists() (nor distill(), which its **options go to) has no keyword "
            "'num_clusters'") in problems, problems
    assert "specialists --halving-factor: default 0.7, distill(): 0.5" in problems, problems
    assert "specialists --overlap: default 1, specialists(): 0" in problems, problems


def test_a_default_declared_again_in_the_parser_is_refused():
    p = argparse.ArgumentParser()
    p.add_argument("--temperature", type=float, default=1.0)
    with pytest.raises(AssertionError, match="--temperature: default 1.0 here, 2.0 in distill"):
        cli._defaults_of(p, distill)


def test_api_errors_are_said_as_the_flags_of_the_same_name():
    parser = cli.build_parser()
    for command in COMMANDS:
        for name in _keywords(command):
            flag = cli._flag_of(parser, command, name)
            assert flag in (name, "--" + name.replace("_", "-")) or flag.isupper(), (command, name, flag)
    assert cli._flag_of(parser, "distill", "l2_penalty") == "--l2-penalty"
    assert cli._flag_of(parser, "distill", "teacher") == "--teacher"
    assert cli._flag_of(parser, "specialists", "max_epochs") == "--max-epochs"
    assert cli._flag_of(parser, "specialists", "generalist") == "--generalist"
    assert cli._flag_of(parser, "forward", "ensemble") == "--ensemble"
    assert cli._flag_of(parser, "compare", "teacher_ensemble") == "--teacher-ensemble"


def test_training_defaults_are_the_core_structs():
    params = inspect.signature(distill).parameters
    loss, opt = _core.LossOptions(), _core.OptimizerOptions()
    assert params["temperature"].default == as_written(loss.temperature) == 2.0
    assert params["average_logits"].default is loss.average_logits is False
    assert params["momentum"].default == as_written(opt.momentum)
    assert params["l2_penalty"].default == as_written(opt.l2_penalty)
    assert as_written(opt.learn_rate) == 0.008 and as_written(_core.OptimizerOptions.adam_learn_rate) == 0.001
    assert repr(loss) == "LossOptions(temperature=2, hard_weight=0, average_logits=False, hint_weight=0)"
    assert repr(opt) == ("OptimizerOptions(adam=False, learn_rate=0.008, momentum=0, l2_penalty=0, "
                         "beta1=0.9, beta2=0.999, epsilon=1e-08)")
    opt.momentum, opt.adam = 0.5, True
    assert opt.momentum == 0.5 and "adam=True" in repr(opt) and "momentum=0.5" in repr(opt)


def _labelled_problem():
    rng = np.random.default_rng(0)
    from svdistill import Component, Model
    w = rng.normal(size=(3, 4)).astype(np.float32)
    model = Model([Component.affine(w, np.zeros(3, np.float32)), Component.activation("Softmax", 3)])
    feats = {f"u{i}": rng.normal(size=(40, 4)).astype(np.float32) for i in range(10)}
    labels = {k: rng.integers(0, 3, len(v)).astype(np.int32) for k, v in feats.items()}
    return model, feats, labels


@pytest.mark.parametrize("old, new, value", [("teachers", "teacher", "model"), ("l2", "l2_penalty", 1e-4)])
def test_the_old_keywords_still_work_with_a_deprecation_warning(old, new, value):
    model, feats, labels = _labelled_problem()
    value = model if value == "model" else value
    common = dict(labels=labels, max_epochs=1, minibatch_size=32)
    _, want = distill(model, feats, **{new: value}, **common)
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated, use {new}="):
        _, got = distill(model, feats, **{old: value}, **common)
    assert [e.cv_objective for e in got.epochs] == [e.cv_objective for e in want.epochs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Exception) as e:
            distill(model, feats, **{old: value, new: value}, **common)
    assert getattr(e.value, "option", None) == old and f"the old name of {new}, and both were given" in str(e.value)


@pytest.mark.parametrize("call", ["truncated_svd", "compress", "factor_layer"])
@pytest.mark.parametrize("old,new,value", [("n_oversamples", "oversamples", 8), ("random_state", "seed", 3)])
def test_the_old_svd_keywords_still_work_with_a_deprecation_warning(call, old, new, value):
    import svdistill
    from svdistill.factoring import factor_layer
    rng = np.random.default_rng(0)
    W = rng.standard_normal((40, 30)).astype(np.float32)
    model = svdistill.Model([svdistill.Component.affine(W, np.zeros(40, np.float32))])
    run = {"truncated_svd": lambda **kw: svdistill.linalg.truncated_svd(W, 4, method="randomized", **kw)[1],
           "compress": lambda **kw: svdistill.compress(model, rank=4, method="randomized", **kw)[0]
           .components[0].weight,
           "factor_layer": lambda **kw: factor_layer(model.components[0], 4, method="randomized", **kw)[0].weight}[call]
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated, use {new}="):
        got = run(**{old: value})
    np.testing.assert_array_equal(got, run(**{new: value}))
    with pytest.raises(svdistill.Error, match=f"{old} is the old name of {new}, and both were given"):
        run(**{old: value, new: value})
