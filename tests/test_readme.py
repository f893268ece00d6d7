"""Every code block of README.md and examples/README.md runs as written, or is excused for a
stated reason.

The blocks are read from the READMEs themselves, so a changed example is tested as changed.
They run in a scratch folder that holds the files a user's recipe would have, under the names
the README uses, made from the repository's fixtures (USER_FILES, then the generated data in
``_user_data``); nothing in a block is rewritten except the program that runs it (SUBSTITUTES).
"""
from __future__ import annotations

import ast
import inspect
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

import svdistill
from conftest import synthetic_feats

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES_README = ROOT / "examples" / "README.md"

# The README's file names, and the repository file that stands for each (fixtures are in
# tests/data/kaldi-nnet1, see its MANIFEST.md).
USER_FILES = {
    "final.nnet": "dnn.nnet.txt",                 # the teacher: 440 -> 3x128 Sigmoid -> 500, Kaldi text
    "big.nnet": "dnn.nnet.bin",                   # the same, Kaldi binary
    "dnn.nnet.bin": "dnn.nnet.bin",               # named as it is in the distill table's command
    "final.feature_transform": "final.feature_transform",  # Splice -5..5, CMVN: 40 -> 440 dims
    "feats.ark": "feats.ark",                     # 3 Kaldi-written utterances of 50 x 40
    "examples/small.nnet": ROOT / "examples" / "small.nnet",
}
# Generated in _user_data (a fixture has too few frames to train on):
#   train.ark, train.scp, data/train/feats.scp  40 x 150 synthetic frames the feature transform maps
#                                               to unit scale: 5,400 training frames after the CV
#                                               tenth, more than the README's largest minibatch (4096)
#   data/dev/feats.scp                          the utterances of feats.ark
#   pdf.ark                                     the teacher's arg-max class of every frame of train.ark
#   student.nnet                                the rank-24 student of dnn.nnet.bin, as the caption
#                                               under the distill table says

# The program that runs a command's first word: this interpreter's, never one found on PATH.
SUBSTITUTES = {
    "svdistill": [sys.executable, "-m", "svdistill"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run"],
    "python": [sys.executable],
}

# Commands the tests do not run, and why.
NOT_RUN = {
    "pip": "installs packages: needs a compiler and the network; the tests run in an installed environment",
    "auditwheel": ("repairs a release wheel: needs auditwheel, patchelf and pip wheel's output; "
                   ".ci/build_wheel.sh runs it"),
}
NOT_RUN_COMMANDS = {
    ("python", "-m", "pytest", "-q"): "the test suite itself",
    ("python", "examples/digits.py"): "tests/test_examples.py runs it (one seed; needs scikit-learn)",
}


# ------------------------------------------------------------------------ reading the blocks

@dataclass
class Block:
    path: Path
    line: int   # of the opening fence, 1-based
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line} ({self.lang or 'no language'})"


def blocks(path: Path) -> List[Block]:
    out, lines, i = [], path.read_text(encoding="utf-8").split("\n"), 0
    while i < len(lines):
        m = re.fullmatch(r"```(\w*)", lines[i])
        if m:
            j = lines.index("```", i + 1)
            out.append(Block(path, i + 1, m.group(1), "\n".join(lines[i + 1:j]) + "\n"))
            i = j
        i += 1
    return out


def commands(text: str) -> List[List[str]]:
    """Shell lines (continuations joined, comments dropped) as argument lists, split at '&&'."""
    out: List[List[str]] = []
    for line in text.replace("\\\n", " ").split("\n"):
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1:]
    return out


def excuse(argv: List[str]) -> Optional[str]:
    return NOT_RUN.get(argv[0]) or NOT_RUN_COMMANDS.get(tuple(argv))


def text_runs(block: Block):
    """'$ command' lines of a text block with the output shown under each."""
    runs, cur = [], None
    for line in block.text.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            cur = (shlex.split(line[2:]), [])
            runs.append(cur)
        else:
            assert cur is not None, f"{block}: output before any '$ command' line"
            cur[1].append(line)
    return runs


def find(path: Path, lang: str, needle: str) -> Block:
    found = [b for b in blocks(path) if b.lang == lang and needle in b.text]
    assert len(found) == 1, f"{len(found)} ```{lang} blocks of {path.name} hold {needle!r}"
    return found[0]


# Every block, by the test that runs it. A new block fails test_every_block_is_run_or_excused
# until a test claims it here.
CLAIMS = [
    (README, "sh", "pip install . && svdistill compress", "test_quickstart_block"),
    (README, "sh", "from PyPI, once published", "excused: every line is a pip install"),
    (README, "sh", 'pip install ".[plot]"', "excused: every line is a pip install"),
    (README, "sh", "auditwheel repair", "excused: builds a release wheel (.ci/build_wheel.sh, CI)"),
    (README, "text", "$ svdistill compress", "test_compress_table_block"),
    (README, "sh", "svdistill compress --energy 0.9", "test_typical_distill_run_block"),
    (README, "sh", "--calibration ark:feats.ark", "test_calibrated_compress_block"),
    (README, "text", "$ svdistill distill", "test_distill_table_block"),
    (README, "sh", "torchrun", "test_torchrun_block"),
    (README, "python", "svdistill.read(", "test_python_api_blocks"),
    (README, "python", "from svdistill.torch import", "test_python_api_blocks"),
    (README, "", "cpp/nnet1/", "test_development_layout_block"),
    (EXAMPLES_README, "sh", "gen_nnet.py", "test_examples_small_nnet_is_what_its_command_makes"),
    (EXAMPLES_README, "sh", "svdistill info", "test_examples_try_block"),
    (EXAMPLES_README, "sh", "examples/digits.py", "excused: pip install, and digits.py runs in test_examples.py"),
]


def test_every_block_is_run_or_excused():
    for path in (README, EXAMPLES_README):
        for b in blocks(path):
            claims = [c for c in CLAIMS if c[0] == path and c[1] == b.lang and c[2] in b.text]
            assert len(claims) == 1, f"{b} is claimed by {len(claims)} tests: {b.text[:200]!r}"
            if claims[0][3].startswith("excused"):
                for argv in commands(b.text):
                    assert excuse(argv), f"{b}: {' '.join(argv)!r} is neither run nor excused"


# ------------------------------------------------------------------- the user's folder

@pytest.fixture(scope="module")
def _user_data(tmp_path_factory, fixtures_dir) -> Path:
    import kaldiio
    d = tmp_path_factory.mktemp("user")
    for name, src in USER_FILES.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixtures_dir / src if isinstance(src, str) else src, d / name)
    ft = svdistill.read(d / "final.feature_transform")
    train = synthetic_feats(ft, 40, 150, seed=19, key=lambda seed, u: f"spk{u // 10}-utt{u:03d}")
    kaldiio.save_ark(str(d / "train.ark"), train, scp=str(d / "train.scp"))
    (d / "data" / "train").mkdir(parents=True)
    (d / "data" / "dev").mkdir(parents=True)
    shutil.copyfile(d / "train.scp", d / "data" / "train" / "feats.scp")
    dev = {k: np.asarray(v) for k, v in kaldiio.load_ark(str(d / "feats.ark"))}
    kaldiio.save_ark(str(d / "data" / "dev" / "feats.ark"), dev, scp=str(d / "data" / "dev" / "feats.scp"))
    teacher = svdistill.Network(d / "final.nnet", feature_transform=ft)
    kaldiio.save_ark(str(d / "pdf.ark"), {k: teacher(v).argmax(1).astype(np.int32) for k, v in train.items()})
    svdistill.compress(d / "dnn.nnet.bin", rank=24, output=d / "student.nnet")
    return d


@pytest.fixture
def user_dir(_user_data, tmp_path) -> Path:
    """A fresh copy of the user's folder for each test: blocks write their outputs there."""
    d = tmp_path / "work"
    shutil.copytree(_user_data, d)
    # scp files name their archives by absolute path: point them at this copy.
    for scp in d.rglob("*.scp"):
        scp.write_text(scp.read_text().replace(str(_user_data), str(d)))
    return d


def _env() -> Dict[str, str]:
    # One thread each: on a busy machine the core's polling threads cost 5-10x the time.
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("SVDISTILL_NUM_THREADS", "1")
    return env


def run(argv: List[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    assert argv[0] in SUBSTITUTES, f"no rule to run {argv[0]!r}"
    return subprocess.run(SUBSTITUTES[argv[0]] + argv[1:], cwd=cwd, capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def run_block(block: Block, cwd: Path) -> List[subprocess.CompletedProcess]:
    done = []
    for argv in commands(block.text):
        if excuse(argv):
            continue
        p = run(argv, cwd)
        assert p.returncode == 0, f"{block}: {' '.join(argv)} exited {p.returncode}:\n{p.stderr}"
        done.append(p)
    return done


# ----------------------------------------------------------------------------- sh and text

def test_quickstart_block(user_dir):
    b = find(README, "sh", "pip install . && svdistill compress")
    (p,) = run_block(b, user_dir)
    assert "model: 30,016 ->" in p.stderr
    small = svdistill.read(user_dir / "small.svd.nnet")
    kinds = [c.kind for c in small]
    assert kinds.count("LinearTransform") == 3 and kinds.count("AffineTransform") == 3
    assert small.input_dim == 40 and small.output_dim == 64


def _mask_times(line: str) -> str:
    return re.sub(r"\d+\.\d+ ?s\b", "<time>", line)


def test_compress_table_block(user_dir):
    """The table shown is the table printed, but for the timings."""
    b = find(README, "text", "$ svdistill compress")
    ((argv, shown),) = text_runs(b)
    p = run(argv, user_dir)
    assert p.returncode == 0, p.stderr
    assert [_mask_times(x) for x in p.stderr.rstrip("\n").split("\n")] == [_mask_times(x) for x in shown]
    assert (user_dir / argv[-1]).is_file()


def test_typical_distill_run_block(user_dir):
    import kaldiio
    b = find(README, "sh", "svdistill compress --energy 0.9")
    compress, distill, compare, forward = run_block(b, user_dir)
    small = svdistill.read(user_dir / "small.nnet")
    kd = svdistill.read(user_dir / "small.kd.nnet")
    assert [(c.kind, c.input_dim, c.output_dim) for c in kd] == [(c.kind, c.input_dim, c.output_dim) for c in small]
    assert "LinearTransform" in [c.kind for c in small]  # --energy 0.9 factored something
    assert "best epoch" in distill.stderr
    m = re.search(r"top-1 agreement\s+([\d.]+)%", compare.stdout + compare.stderr)
    assert m and float(m.group(1)) > 50, compare.stdout + compare.stderr
    # forward's log-posteriors: one matrix per dev utterance, rows summing to 1 as posteriors
    out = commands(b.text)[3][-1]
    assert out.startswith("ark:"), out
    post = dict(kaldiio.load_ark(str(user_dir / out[4:])))
    assert sorted(post) == sorted(k for k, _ in kaldiio.load_ark(str(user_dir / "feats.ark")))
    for v in post.values():
        assert v.shape == (50, kd.output_dim)
        np.testing.assert_allclose(np.exp(v).sum(1), 1, rtol=1e-4)


def test_calibrated_compress_block(user_dir):
    b = find(README, "sh", "--calibration ark:feats.ark")
    compress, spectrum = run_block(b, user_dir)
    # As the README says: the KL drops to about 0.002, agreement about 94%, the frames counted.
    assert "calibrated on 150 frames of 3 utterances of ark:feats.ark" in compress.stderr
    m = re.search(r"KL\(teacher \|\| student\)\s+([\d.]+)", compress.stderr)
    assert m and float(m.group(1)) < 0.005, compress.stderr
    m = re.search(r"top-1 agreement\s+([\d.]+)%", compress.stderr)
    assert m and float(m.group(1)) > 90, compress.stderr
    assert "(whitened: output energy on 150 frames of ark:feats.ark)" in spectrum.stdout


def _shape(line: str) -> str:
    """A table line with each number replaced by N: what any run of the command prints."""
    return " ".join(re.sub(r"-?\d[\d,]*(\.\d+)?(e[-+]?\d+)?", "N", line).split())


def test_distill_table_block(user_dir):
    """The command runs and prints a table of the shape shown (its numbers come from 30,000
    frames; this run has 6,000)."""
    b = find(README, "text", "$ svdistill distill")
    ((argv, shown),) = text_runs(b)
    p = run(argv, user_dir)
    assert p.returncode == 0, p.stderr
    got = p.stderr.rstrip("\n").split("\n")
    assert got[0] == shown[0]  # the header, byte for byte
    assert _shape(got[1]) == _shape(shown[1]) and got[1].endswith("initial")
    row = _shape(shown[2])
    assert row.endswith(" accepted")
    assert len(got) >= 4 and all(_shape(x).rsplit(" ", 1)[0] == row.rsplit(" ", 1)[0] for x in got[2:-1]), got
    best = shown[-1].split(" (")[0]
    assert _shape(got[-1].split(" (")[0]) == _shape(best), (got[-1], best)
    kl = [float(x) for x in re.search(r"KL ([\d.]+) -> ([\d.]+)", got[-1]).groups()]
    assert kl[1] < kl[0], got[-1]
    assert svdistill.read(user_dir / argv[-1]).num_params == svdistill.read(user_dir / "student.nnet").num_params


def test_torchrun_block(user_dir):
    """Two ranks on gloo, after the typical run's compress, as the text says."""
    pytest.importorskip("torch")
    typical = commands(find(README, "sh", "svdistill compress --energy 0.9").text)
    p = run(typical[0], user_dir)
    assert p.returncode == 0, p.stderr
    (p,) = run_block(find(README, "sh", "torchrun"), user_dir)
    assert "best epoch" in p.stderr
    assert p.stderr.count("best epoch") == 1  # only rank 0 prints the table
    kd = svdistill.read(user_dir / "small.kd.nnet")
    assert kd.num_params == svdistill.read(user_dir / "small.nnet").num_params


def test_development_layout_block():
    b = find(README, "", "cpp/nnet1/")
    for line in b.text.split("\n"):
        if line and not line.startswith(" "):
            path = line.split()[0]
            assert (ROOT / path).exists(), f"{b}: {path} does not exist"


# ------------------------------------------------------------------------------- Python

def _exec(block: Block, ns: dict) -> None:
    exec(compile(block.text, str(block), "exec"), ns)


@pytest.fixture
def one_core_thread():
    threads = svdistill.linalg.get_num_threads()
    svdistill.linalg.set_num_threads(1)
    yield
    svdistill.linalg.set_num_threads(threads)


def test_python_api_blocks(user_dir, monkeypatch, capsys, one_core_thread):
    monkeypatch.chdir(user_dir)
    core = find(README, "python", "svdistill.read(")
    ns: dict = {}
    _exec(core, ns)

    model, W, U, s, Vt, s_all = (ns[k] for k in ("model", "W", "U", "s", "Vt", "s_all"))
    assert W.shape == (128, 440) and W.dtype == np.float32
    assert U.shape == (128, 64) and s.shape == (64,) and Vt.shape == (64, 440)
    np.testing.assert_allclose(s[0], s_all[0], rtol=1e-3)
    assert s_all.shape == (128,) and np.all(np.diff(s_all) <= 0)
    assert "AffineTransform 440 128 56448" in capsys.readouterr().out  # the streamed components
    svdistill.read("final.bin")  # written, and Kaldi binary
    assert open("final.bin", "rb").read(2) == b"\0B"
    feats = ns["feats"]
    assert feats.shape == (50, 40)
    # the last `post` is forward's log-posteriors of that utterance
    np.testing.assert_allclose(np.exp(ns["post"]).sum(1), 1, rtol=1e-5)
    assert ns["post"].shape == (50, 500)
    student = svdistill.read("small.nnet")
    assert student.num_params <= 0.3 * model.num_params
    report = ns["report"]
    assert math.isfinite(report.best.cv_kl) and report.best.cv_kl < report.epochs[0].cv_kl
    assert svdistill.read("small.kd.nnet").num_params == student.num_params
    trained = ns["trained"]
    assert [c.kind for c in trained] == [c.kind for c in model]

    torch_block = find(README, "python", "from svdistill.torch import")
    try:
        import onnx  # noqa: F401  (export's ONNX format)
        import torch
    except ImportError as e:
        pytest.skip(f"the svdistill[torch] block needs {e.name}")
    _exec(torch_block, ns)
    want = svdistill.Network("final.nnet", feature_transform="final.feature_transform")(feats)
    np.testing.assert_allclose(ns["post"].detach().numpy(), want, rtol=1e-5, atol=1e-7)
    assert Path("final.onnx").stat().st_size > 0
    gpu = [n for n in ast.walk(ast.parse(torch_block.text))
           if isinstance(n, ast.Call) and any(k.arg == "device" for k in n.keywords)]
    assert len(gpu) == 1
    if torch.cuda.is_available():
        assert any(Path("ckpt").iterdir())
    else:
        # The GPU statement did not run: at least its keywords are distill's.
        inspect.signature(svdistill.distill).bind(*[None] * len(gpu[0].args),
                                                  **{k.arg: None for k in gpu[0].keywords})


def test_distill_keywords_named_in_the_text_exist():
    text = README.read_text(encoding="utf-8")
    m = re.search(r"`distill` takes the CLI's options as keyword arguments \((.*?)\)", text, re.S)
    names = re.findall(r"`(\w+)`", m.group(1))
    assert len(names) > 10
    params = inspect.signature(svdistill.distill).parameters
    assert [n for n in names if n not in params] == []
    assert "log" in params


def _distill_option(flag: str):
    return next(a for a in _subcommands()["distill"]._actions if flag in a.option_strings)


def _subcommands():
    import argparse

    from svdistill.cli import build_parser
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


# Flags of other programs that the command sections name (torchrun's, in the distill section).
OTHER_PROGRAMS_FLAGS = {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--standalone"}


def test_command_table_options_exist():
    """Each synopsis in the command table, and each command's section of the reference, names
    only options its command has; the environment table holds every variable the CLI's help
    lists."""
    sub = _subcommands()
    rows = re.findall(r"^\| `svdistill (\w+) (.*?)` \|", README.read_text(encoding="utf-8"), re.M)
    assert sorted(c for c, _ in rows) == sorted(sub)
    for command, synopsis in rows:
        have = {o for a in sub[command]._actions for o in a.option_strings}
        named = set(re.findall(r"(--[a-z][\w-]*)", synopsis))
        assert named <= have, (command, named - have)
    for command in sub:
        have = {o for a in sub[command]._actions for o in a.option_strings}
        body = re.sub(r"```.*?```", "", _section(f"### `svdistill {command}`"), flags=re.S)
        named = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", body)) - OTHER_PROGRAMS_FLAGS
        assert named <= have, (command, named - have)
    from svdistill.cli import build_parser
    listed = set(re.findall(r"(SVDISTILL_\w+)=", build_parser().epilog))
    environment = _section("### Conventions").split("**Environment:**")[1]
    assert listed and listed <= set(re.findall(r"`(SVDISTILL_\w+)=", environment)), listed
    reference = _section("## Command line reference")
    assert "`svdistill --version`" in reference and "`svdistill.build_info()`" in reference
    assert any("--version" in a.option_strings for a in build_parser()._actions)
    assert svdistill.build_info()["version"] == svdistill.__version__


def _section(heading: str) -> str:
    """The README's text under `heading` (a whole line), up to the next heading of its level or above."""
    text = README.read_text(encoding="utf-8")
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index("\n" + heading + "\n")
    end = re.search(r"\n#{1,%d} " % level, text[start + 1:])
    return text[start:start + 1 + end.start()] if end else text[start:]


def test_distill_defaults_in_the_text_are_the_cli_defaults():
    text = _section("### `svdistill distill`")
    stated = re.findall(r"`(--[\w-]+)`(?: frames)? \((?:default )?([-\d.]+)\)", text)
    newbob = re.search(r"newbob schedule of\s+`steps/nnet/train_scheduler.sh` \((.*?)\)", text, re.S)
    stated += re.findall(r"`(--[\w-]+) ([-\d.]+)`", newbob.group(1))
    assert {f for f, _ in stated} >= {"--temperature", "--minibatch-size", "--learn-rate", "--seed",
                                      "--cv-fraction", "--max-epochs", "--halving-factor"}
    for flag, value in stated:
        action = _distill_option(flag)
        if action.default is None:  # chosen later (it depends on other options): the help says it
            assert f"default {value}" in action.help, (flag, action.help)
        else:
            assert float(action.default) == float(value), (flag, action.default, value)


# ----------------------------------------------------------------------- --layers example

def _layers_example(where: str) -> str:
    if where == "README":
        m = re.search(r"`--layers ([\d,\-]+)`", README.read_text(encoding="utf-8"))
    else:  # compress --help
        help_text = next(a.help for a in _subcommands()["compress"]._actions if "--layers" in a.option_strings)
        m = re.search(r"e\.g\. ([\d,\-]+)", help_text)
    assert m, f"the {where} no longer shows a --layers example"
    return m.group(1)


@pytest.mark.parametrize("where", ["README", "compress --help"])
@pytest.mark.parametrize("model", ["final.nnet", "examples/small.nnet"])
def test_layers_example_selects_the_affine_layers_it_spans(user_dir, model, where):
    """The `--layers` example works on affine/activation models: its indices and ranges
    select the AffineTransforms among them."""
    spec = _layers_example(where)
    picked = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        picked.update(range(int(lo), int(hi or lo) + 1))
    structure = [c.kind for c in svdistill.iter_components(user_dir / model)]
    want = [i for i in sorted(picked) if i <= len(structure) and structure[i - 1] == "AffineTransform"]
    assert want
    p = run(["svdistill", "compress", "--rank-fraction", "0.25", "--layers", spec, model, "out.nnet",
             "--report", "r.json"], user_dir)
    assert p.returncode == 0, f"{where}'s --layers {spec} on {model} ({', '.join(structure)}): {p.stderr}"
    assert [L["index"] for L in json.loads((user_dir / "r.json").read_text())["layers"]] == want
    p = run(["svdistill", "spectrum", "--json", "--layers", spec, model], user_dir)
    assert p.returncode == 0, p.stderr
    assert [L["index"] for L in json.loads(p.stdout)["layers"]] == want


def test_distill_help_example_runs(user_dir):
    epilog = _subcommands()["distill"].epilog
    m = re.search(r"Example: (.*?)\.?(?:\s+[A-Z]|$)", epilog, re.S)  # up to the next sentence
    argv = shlex.split(m.group(1))
    p = run(argv, user_dir)
    assert p.returncode == 0, p.stderr
    assert svdistill.read(user_dir / argv[-1]).num_params == svdistill.read(user_dir / "student.nnet").num_params


# ----------------------------------------------------------------------- examples/README.md

def test_examples_small_nnet_is_what_its_command_makes(tmp_path):
    b = find(EXAMPLES_README, "sh", "gen_nnet.py")
    ((*argv, out_flag, out),) = commands(b.text)
    assert (out_flag, out) == ("--out", "examples/small.nnet")
    p = run([*argv, out_flag, str(tmp_path / "small.nnet")], ROOT)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "small.nnet").read_bytes() == (ROOT / out).read_bytes()


def test_examples_try_block(user_dir):
    b = find(EXAMPLES_README, "sh", "svdistill info")
    run_block(b, user_dir)
    assert json.loads((user_dir / "small.json").read_text())["params_before"] == 30016
    assert svdistill.read(user_dir / "small.pdnn.txt").num_params < 30016
    assert svdistill.read(user_dir / "small.bin").binary
    assert svdistill.read(user_dir / "small.svd.nnet").num_params < 30016
