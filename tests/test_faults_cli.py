"""Faults around the model readers and writers, tried as a user would (issue 19):
signals, stale temporaries, outputs that are inputs, symbolic links, FIFOs, file
modes, API misuse, truncated models described one way, parameter counts.
"""
from __future__ import annotations

import functools
import io
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import svdistill
from conftest import stop_while_writing
from svdistill import Component, Model

posix = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals, FIFOs and modes")


def _big_model(path: Path, hidden: int = 1024, layers: int = 4) -> None:
    rng = np.random.default_rng(0)
    dims = [440] + [hidden] * layers + [500]
    comps = []
    for i in range(len(dims) - 1):
        comps.append(Component.affine(rng.standard_normal((dims[i + 1], dims[i])).astype(np.float32) * 0.05,
                                      rng.standard_normal(dims[i + 1]).astype(np.float32)))
        comps.append(Component.activation("Sigmoid" if i < len(dims) - 2 else "Softmax", dims[i + 1]))
    svdistill.write(Model(comps), path)


@pytest.fixture(scope="module")
def big_text(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("big") / "big.nnet"
    _big_model(p)
    return p


def _default_hangup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _popen(*args, **kw) -> subprocess.Popen:
    """The CLI as a child whose SIGHUP has its default action, as in a terminal, even when the
    tests run under nohup (which the child would inherit: an ignored hangup stays ignored)."""
    if os.name == "posix":
        kw.setdefault("preexec_fn", _default_hangup)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "svdistill", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kw)


def _temps(d: Path):
    return sorted(p for p in d.iterdir() if ".svdistill-" in p.name)


def _signal_while_writing(args, folder: Path, sig: int, **kw) -> subprocess.Popen:
    """Starts the CLI and sends ``sig`` once its temporary output holds bytes."""
    for _ in range(5):
        proc = _popen(*args, **kw)
        deadline = time.time() + 60
        sent = False
        while time.time() < deadline and proc.poll() is None:
            tmps = _temps(folder)
            if tmps and tmps[0].stat().st_size > 0:
                # Stopped first, so that "still writing" is known when the signal is sent: without
                # that, the writer can finish (and exit 0) between the look and the signal.
                if stop_while_writing(proc, lambda: bool(_temps(folder))):
                    proc.send_signal(sig)
                    sent = True
                proc.send_signal(signal.SIGCONT)
                break
            time.sleep(0.001)
        proc.wait(timeout=120)
        if sent:
            return proc
    pytest.fail("the writer finished before the signal could be sent")


# ------------------------------------------------------------------ data loss

@posix
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["TERM", "HUP"])
def test_stop_signal_mid_write_cleans_up_like_ctrl_c(tmp_path, big_text, sig, status):
    target = tmp_path / "out.nnet"
    target.write_bytes(b"previous")
    proc = _signal_while_writing(["compress", "--rank-fraction", "0.5", big_text, target], tmp_path, sig)
    err = proc.stderr.read().decode()
    assert proc.returncode == status, err
    assert err.splitlines()[-1] == "svdistill: terminated"
    assert "Traceback" not in err
    assert target.read_bytes() == b"previous"
    assert _temps(tmp_path) == []


@posix
def test_sigint_still_says_interrupted_with_130(tmp_path, big_text):
    proc = _signal_while_writing(["copy", big_text, tmp_path / "o.nnet"], tmp_path, signal.SIGINT)
    assert proc.returncode == 130
    assert proc.stderr.read().decode().splitlines()[-1] == "svdistill: interrupted"
    assert _temps(tmp_path) == []


@posix
def test_ignored_hangup_stays_ignored(tmp_path, big_text):
    """Under nohup (SIGHUP ignored) a hangup must not stop the run."""
    def ignore_hup():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    proc = _signal_while_writing(["copy", big_text, tmp_path / "o.nnet"], tmp_path, signal.SIGHUP,
                                 preexec_fn=ignore_hup)
    assert proc.returncode == 0, proc.stderr.read()
    assert svdistill.read(tmp_path / "o.nnet").num_params == svdistill.read(big_text).num_params


@posix
def test_sigkill_temporaries_are_removed_by_the_next_write(tmp_path, big_text):
    target = tmp_path / "out.nnet"
    for _ in range(2):  # two kills: two temporaries would pile up
        proc = _signal_while_writing(["copy", big_text, target], tmp_path, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
    left = _temps(tmp_path)
    assert len(left) == 1  # the second run removed the first one's
    # ".out.nnet.svdistill-<host>.<pid>-XXXXXX": another host's, and one being written (its
    # writer holds its lock, whatever its pid) stay; one nobody holds goes, even with a live pid.
    import fcntl
    host = left[0].name[len(".out.nnet.svdistill-"):].rsplit(".", 1)[0]
    live = tmp_path / f".out.nnet.svdistill-{host}.999999999-abcdef"
    unheld = tmp_path / f".out.nnet.svdistill-{host}.{os.getpid()}-ghijkl"
    foreign = tmp_path / ".out.nnet.svdistill-otherhost.12345-abcdef"
    other_target = tmp_path / f".other.nnet.svdistill-{host}.999999999-abcdef"
    for p in (live, unheld, foreign, other_target):
        p.write_bytes(b"x")
    holder = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        r = subprocess.run([sys.executable, "-m", "svdistill", "copy", big_text, target], capture_output=True)
    finally:
        os.close(holder)
    assert r.returncode == 0, r.stderr
    assert _temps(tmp_path) == sorted([live, foreign, other_target])
    assert svdistill.read(target).num_params == svdistill.read(big_text).num_params


def test_atomic_output_interrupted_leaves_target_and_no_temporary(tmp_path):
    from svdistill.io import atomic_output
    target = tmp_path / "r.json"
    target.write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            Path(tmp).write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "previous" and _temps(tmp_path) == []


def _fixture_copy(fixtures_dir: Path, tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    p.write_bytes((fixtures_dir / name).read_bytes())
    return p


OVERWRITES = {
    "report-is-model-in": (["compress", "--rank", "4", "{model}", "{tmp}/o.nnet", "--report", "{model}"],
                           "--report", "MODEL_IN"),
    "report-is-model-out": (["compress", "--rank", "4", "{model}", "{tmp}/o.nnet", "--report", "{tmp}/o.nnet"],
                            "--report", "MODEL_OUT"),
    "plot-is-model": (["spectrum", "{model}", "--plot", "{model}"], "--plot", "MODEL"),
    "report-is-check-feats": (["compress", "--rank", "4", "{model}", "{tmp}/o.nnet", "--check", "ark:{feats}",
                               "--report", "{feats}"], "--report", "--check"),
    "model-out-is-feats": (["compress", "--rank", "4", "{model}", "{feats}", "--check", "ark:{feats}"],
                           "MODEL_OUT", "--check"),
    "check-compares-itself": (["compress", "--rank", "4", "{model}", "{model}", "--check", "ark:{feats}"],
                              "MODEL_OUT", "compare the output with itself"),
    "forward-output-is-model": (["forward", "{model}", "ark:{feats}", "ark:{model}"], "OUT_WSPECIFIER", "MODEL"),
    "student-out-is-feats": (["distill", "--labels", "ark:{feats}", "{model}", "ark:{feats}", "{feats}"],
                             "STUDENT_OUT", "FEATS_RSPECIFIER"),
    "report-is-student": (["distill", "--teacher", "{model}", "{model}", "ark:{feats}", "{tmp}/s.nnet",
                           "--report", "{model}"], "--report", "STUDENT_IN"),
}


@pytest.mark.parametrize("case", list(OVERWRITES))
def test_output_that_is_an_input_is_refused_before_any_work(fixtures_dir, tmp_path, run_cli, clean_cli_error,
                                                            case):
    model = _fixture_copy(fixtures_dir, tmp_path, "tiny_mlp.nnet.txt")
    feats = _fixture_copy(fixtures_dir, tmp_path, "feats.ark")
    before = {p: p.read_bytes() for p in (model, feats)}
    args, out_name, in_name = OVERWRITES[case]
    p = run_cli(*[a.format(model=model, feats=feats, tmp=tmp_path) for a in args])
    line = clean_cli_error(p, out_name, in_name)
    assert "same file" in line or "itself" in line
    assert {q: q.read_bytes() for q in before} == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["feats.ark", "tiny_mlp.nnet.txt"]


def test_copy_onto_itself_is_still_allowed(fixtures_dir, tmp_path, run_cli):
    model = _fixture_copy(fixtures_dir, tmp_path, "tiny_mlp.nnet.txt")
    p = run_cli("copy", "--binary", model, model)
    assert p.returncode == 0, p.stderr
    assert svdistill.read(model).binary


@posix
def test_output_symlink_is_written_through(fixtures_dir, tmp_path, run_cli):
    real = tmp_path / "models" / "final.nnet"
    real.parent.mkdir()
    real.write_bytes(b"previous")
    link = tmp_path / "latest.nnet"
    link.symlink_to(Path("models") / "final.nnet")  # relative, as ln -s makes them
    report_real = tmp_path / "models" / "r.json"
    report_link = tmp_path / "r.json"
    report_link.symlink_to(report_real)  # dangling: the file it names is created
    p = run_cli("compress", "--rank", "4", fixtures_dir / "tiny_mlp.nnet.txt", link, "--report", report_link)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and report_link.is_symlink()
    assert len(svdistill.read(real)) == 9  # the 6 components, 3 affine layers now pairs
    assert report_real.read_text().startswith("{")
    assert _temps(tmp_path) == [] and _temps(real.parent) == []


@posix
def test_fifo_output_is_written_in_place(fixtures_dir, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = subprocess.run([sys.executable, "-m", "svdistill", "copy", fixtures_dir / "tiny_mlp.nnet.bin", fifo],
                       capture_output=True, timeout=60)
    reader.join(timeout=30)
    if reader.is_alive():  # nothing opened the FIFO: unblock the reader
        with open(fifo, "wb"):
            pass
        reader.join(timeout=10)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not replaced by a regular file
    assert got and got[0] == (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()


@posix
@pytest.mark.parametrize("existing", [None, 0o640], ids=["new", "existing-0640"])
def test_report_gets_the_mode_a_model_gets(fixtures_dir, tmp_path, existing):
    report, model = tmp_path / "r.json", tmp_path / "o.nnet"
    if existing is not None:
        report.write_text("{}")
        os.chmod(report, existing)
    r = subprocess.run([sys.executable, "-m", "svdistill", "compress", "--rank", "4",
                        fixtures_dir / "tiny_mlp.nnet.txt", model, "--report", report],
                       capture_output=True, preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, r.stderr
    want = 0o644 if existing is None else existing
    assert stat.S_IMODE(report.stat().st_mode) == want
    assert stat.S_IMODE(model.stat().st_mode) == 0o644


# ------------------------------------------------------- crashes and silent failures

@pytest.mark.parametrize("make,phrase", [
    (lambda t: (t / "l1").symlink_to(t / "l2") or (t / "l2").symlink_to(t / "l1") or t / "l1", "symbolic links"),
    (lambda t: t / "missing" / "o.nnet", "does not exist"),
    (lambda t: (t / "d").symlink_to(t / "nodir" / "x.nnet") or t / "d", "does not exist"),
    (lambda t: t, "is a directory"),
], ids=["link-loop", "missing-folder", "dangling-link-into-missing-folder", "directory"])
def test_unwritable_output_is_one_clean_line(fixtures_dir, tmp_path, run_cli, clean_cli_error, make, phrase):
    out = make(tmp_path)
    p = run_cli("compress", "--rank", "4", fixtures_dir / "tiny_mlp.nnet.txt", tmp_path / "ok.nnet",
                "--report", out)
    clean_cli_error(p, "--report", phrase)
    assert not (tmp_path / "ok.nnet").exists()  # refused before the work
    p = run_cli("copy", fixtures_dir / "tiny_mlp.nnet.txt", out)
    clean_cli_error(p, "MODEL_OUT", phrase)


def test_copy_vector_at_the_end_of_a_file_reads(tmp_path):
    """A valid model whose last integer vector is longer than what follows it."""
    idx = " ".join(str(i) for i in range(1, 61))
    p = tmp_path / "copy.nnet"
    p.write_text(f"<Nnet>\n<Copy> 60 60\n[ {idx} ]\n<!EndOfComponent>\n</Nnet>\n")
    m = svdistill.read(p)
    assert m[0].ints.tolist() == list(range(1, 61))
    assert svdistill.read(io.BytesIO(p.read_bytes()))[0].ints.tolist() == list(range(1, 61))


# ----------------------------------------------------------- messages and API

def _one(m):
    return Model([Component.activation("Sigmoid", 3)]) if m is None else m


API_MISUSE = {
    "write-None": (lambda t: svdistill.write(None, t / "x.nnet"), "expected a Model"),
    "write-text-mode": (lambda t: svdistill.write(_one(None), open(t / "y.nnet", "w")), "binary mode ('wb')"),
    "write-to-None": (lambda t: svdistill.write(_one(None), None), "expected the output as a path"),
    "write-items": (lambda t: svdistill.write([1, 2], t / "x.nnet"), "item 1 of the model is a int"),
    "write-binary": (lambda t: svdistill.write(_one(None), t / "x.nnet", binary="yes"), "binary must be"),
    "read-None": (lambda t: svdistill.read(None), "expected a model: a path"),
    "iter-int": (lambda t: svdistill.iter_components(3), "expected a model: a path"),
    "info-None": (lambda t: svdistill.info(None), "expected a model: a path"),
    "affine-ragged": (lambda t: Component.affine([[1, 2], [3]]), "weight must be a 2-D"),
    "affine-strings": (lambda t: Component.affine(np.array([["a", "b"]])), "weight must be an array of real"),
    "affine-complex": (lambda t: Component.affine(np.ones((2, 2), complex)), "weight must be an array of real"),
    "affine-coef": (lambda t: Component.affine(np.ones((2, 2)), learn_rate_coef="fast"),
                    "learn_rate_coef must be a number"),
    "bias-strings": (lambda t: Component.affine(np.ones((2, 2)), "ab"), "bias must be an array of numbers"),
    "activation-kind": (lambda t: Component.activation(None, 3), "kind must be a component kind"),
    "activation-dim": (lambda t: Component.activation("Sigmoid", "x"), "dim must be an integer"),
    "activation-float-dim": (lambda t: Component.activation("Sigmoid", 2.5), "dim must be an integer"),
    "set-max-norm": (lambda t: setattr(Component.affine(np.ones((2, 2))), "max_norm", None),
                     "<MaxNorm> must be a number"),
    "Component-None": (lambda t: Component(None), "Component() wraps"),
    "Model-None": (lambda t: Model(None), "Model() takes a list of Components"),
    "Model-items": (lambda t: Model([Component.activation("Sigmoid", 3), "x"]), "item 2 is a str"),
}


@pytest.mark.parametrize("case", list(API_MISUSE))
def test_api_misuse_is_an_error_that_says_what_was_expected(tmp_path, case):
    call, phrase = API_MISUSE[case]
    with pytest.raises(svdistill.Error) as e:
        call(tmp_path)
    assert phrase in str(e.value)
    assert _temps(tmp_path) == [] and not (tmp_path / "x.nnet").exists()


@pytest.mark.filterwarnings("ignore::svdistill.io.ConversionWarning")
def test_pdnn_from_binary_input_writes_text(fixtures_dir, tmp_path):
    """--dialect pdnn with a binary input: the obvious form (text), not an error."""
    svdistill.write(svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin"), tmp_path / "p.nnet", dialect="pdnn")
    m = svdistill.read(tmp_path / "p.nnet")
    assert not m.binary and m.dialect == "pdnn"


def _structure_scan(path):
    r = svdistill._core.Reader(str(path), True)
    while r.next() is not None:
        pass


@pytest.mark.parametrize("model", ["dnn.nnet.txt", "tiny_mlp.nnet.txt", "extras.nnet.txt", "tiny_mlp.nnet.bin"])
def test_truncated_model_is_described_one_way(fixtures_dir, tmp_path, model):
    """The structure scan (compress, spectrum), the full parse (info, copy) and a pipe
    all say the same thing about the same cut: where the input ends."""
    data = (fixtures_dir / model).read_bytes()
    cut = tmp_path / model
    checked = 0
    for n in range(97, len(data) - 20, max(1, len(data) // 61)):
        cut.write_bytes(data[:n])
        said = []
        for how in (lambda: _structure_scan(cut), lambda: svdistill.read(cut),
                    lambda: svdistill.read(io.BytesIO(data[:n]))):
            with pytest.raises(svdistill.FormatError) as e:
                how()
            said.append(str(e.value))
        assert all("the input ends" in s for s in said), (n, said)
        assert "ragged" not in " ".join(said) and "values but the header says" not in " ".join(said), (n, said)
        checked += 1
    assert checked > 40


def test_truncated_model_info_and_compress_agree(fixtures_dir, tmp_path, run_cli):
    cut = tmp_path / "cut.nnet"
    cut.write_bytes((fixtures_dir / "dnn.nnet.txt").read_bytes()[:200000])
    lines = [run_cli("info", cut).stderr.decode(), run_cli("compress", "--rank", "4", cut, tmp_path / "o").stderr
             .decode(), run_cli("info", "-", input=cut.read_bytes()).stderr.decode().replace("<stdin>", str(cut))]
    assert lines[0] == lines[1] == lines[2]
    assert "the input ends inside the weight matrix" in lines[0]


UNKNOWN = (b"<Nnet>\n<Foo> 3 3 bar <Baz> 1 2\n<!EndOfComponent>\n"
           b"<AffineTransform> 3 3\n<LearnRateCoef> 1 <BiasLearnRateCoef> 1 <MaxNorm> 0\n"
           b"[ 1 2 3\n4 5 6\n7 8 9 ]\n[ 1 2 3 ]\n<!EndOfComponent>\n"
           b"<MaxPoolingComponent> 3 3 <PoolSize> 1 <PoolStep> 1 <PoolStride> 1\n<!EndOfComponent>\n</Nnet>\n")


def test_parameter_count_has_one_definition(tmp_path, run_cli):
    p = tmp_path / "u.nnet"
    p.write_bytes(UNKNOWN)
    m = svdistill.read(p)
    d = svdistill.info(p)
    assert m.num_params == d["num_params"] == 12
    assert m.uncounted == d["uncounted"] == [1]  # MaxPooling is not updatable: Kaldi counts 0 for it
    assert [c.num_params for c in m] == [None, 12, 0]
    r = run_cli("info", p)
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode().splitlines()[3]
    assert line.startswith("number-of-parameters 1.2e-05 millions without component 1 <Foo>")
    assert "unknown" in line


# ------------------------------------------------------------ review of the issue-19 fixes


def test_an_archive_and_its_scp_named_alike_is_said_once_and_clearly(fixtures_dir, tmp_path, run_cli,
                                                                     clean_cli_error):
    out = tmp_path / "o.ark"
    line = clean_cli_error(run_cli("forward", fixtures_dir / "tiny_mlp.nnet.bin", f"ark:{fixtures_dir / 'feats.ark'}",
                                   f"ark,scp:{out},{out}"),
                           "the archive and the scp are the same file", "give them two names")
    assert "OUT_WSPECIFIER" not in line and " and ark,scp:" not in line, line
    assert list(tmp_path.iterdir()) == []


def test_a_path_given_as_an_rspecifier_says_an_rspecifier(fixtures_dir, tmp_path, run_cli, clean_cli_error):
    line = clean_cli_error(run_cli("forward", fixtures_dir / "tiny_mlp.nnet.bin", "s.ark", f"ark:{tmp_path / 'o'}"),
                           "'s.ark' is not an rspecifier")
    assert " a rspecifier" not in line


def test_specifier_files_are_those_of_the_archive_parsers(tmp_path):
    """The CLI's input/output overlap check reads Kaldi specifiers with archive's parsers."""
    from svdistill.cli import _files_of

    def names(value, spec=""):
        return [f for f, _ in _files_of(value, spec)]
    assert names("ark,t:a.ark", "r") == ["a.ark"]
    assert names("scp,p:a.scp", "r") == ["a.scp"]  # (not there: nothing behind it)
    assert names("ark,scp,t:a.ark,a.scp", "w") == ["a.ark", "a.scp"]
    assert names("t,ark:a.ark", "w") == ["a.ark"]  # options before the kind, as Kaldi allows
    assert names("ark:gunzip -c a.gz |", "r") == [] and names("ark:| gzip -c > a.gz", "w") == []
    assert names("ark:-", "r") == [] and names("model.nnet") == ["model.nnet"]
    assert names("bogus:x", "r") == []  # invalid: the command itself says why
    scp = tmp_path / "x.scp"
    scp.write_text(f"u1 {tmp_path}/a.ark:5\nu2 {tmp_path}/b.ark:9\nu3 gunzip -c c.gz |\n")
    assert _files_of(f"scp:{scp}", "r") == [(str(scp), False), (f"{tmp_path}/a.ark", True),
                                            (f"{tmp_path}/b.ark", True)]


def test_stopped_early_is_not_printed_as_an_error(tmp_path, run_cli, monkeypatch, capsys):
    """The model was written (exit 3): 'svdistill: stopped early: CAUSE (the best model, epoch N, was
    written to OUT)', the cause in the command's words, on one line."""
    from svdistill import cli
    from svdistill.distill import TrainingStopped
    from svdistill.distill.report import DistillReport
    from svdistill.errors import option_error

    # The command passes the keywords of distill's signature (cli.options.keywords_of): the fake has it.
    @functools.wraps(sys.modules["svdistill.distill"].distill)
    def fake_distill(*args, **kw):
        e = TrainingStopped("x")
        e.report = DistillReport(epochs=[], best_epoch=2, stopped="", temperature=1.0, hard_weight=0.0, teachers=1,
                                 cv_frames=0, cv_source="", skipped_utterances=0, unlabelled_utterances=0,
                                 engine="core", device="cpu", precision="fp32", ranks=1, error=None)
        e.written = kw["output"]
        e.cause = option_error("learn_rate", "1e+06 is too large: training diverges\neven at 976.562")
        raise e

    monkeypatch.setattr(sys.modules["svdistill.distill"], "distill", fake_distill)
    t = tmp_path / "t.nnet"
    Model([Component.activation("Softmax", 3)]).write(t)
    rc = cli.main(["distill", "--teacher", str(t), str(t), "ark:/dev/null", str(tmp_path / "o.nnet")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 3 and len(err) == 1, err
    assert err[0] == ("svdistill: stopped early: --learn-rate 1e+06 is too large: training diverges; even at "
                      f"976.562 (the best model, epoch 2, was written to {tmp_path / 'o.nnet'})"), err


# ---------------------------------------------------------------- second new-user trial


def _scp_copy(tmp_path: Path, fixtures_dir: Path, name: str) -> Path:
    """An archive and its scp (name.ark, name.scp) holding the fixture features."""
    from svdistill.archive import read_table, write_table
    write_table(f"ark,scp:{tmp_path / name}.ark,{tmp_path / name}.scp",
                read_table(f"ark:{fixtures_dir / 'feats.ark'}"))
    return tmp_path / f"{name}.scp"


def _labels_scp(tmp_path: Path) -> Path:
    import kaldiio

    from svdistill.archive import read_table
    keys = [k for k, _ in read_table(f"ark:{tmp_path / 'tr.ark'}")]
    kaldiio.save_ark(str(tmp_path / "al.ark"), {k: np.zeros(50, dtype=np.int32) for k in keys},
                     scp=str(tmp_path / "al.scp"))
    return tmp_path / "al.scp"


SCP_OVERWRITES = {
    "distill-student-out": (["distill", "--max-epochs", "1", "--teacher", "{model}", "{model}", "scp:{t}/tr.scp",
                             "{t}/tr.ark"], "STUDENT_OUT", "FEATS_RSPECIFIER"),
    "distill-cv-feats": (["distill", "--max-epochs", "1", "--teacher", "{model}", "--cv-feats", "scp:{t}/tr.scp",
                          "{model}", "ark:{feats}", "{t}/tr.ark"], "STUDENT_OUT", "--cv-feats"),
    "distill-report": (["distill", "--max-epochs", "1", "--teacher", "{model}", "--report", "{t}/tr.ark",
                        "{model}", "scp:{t}/tr.scp", "{t}/o.nnet"], "--report", "FEATS_RSPECIFIER"),
    "distill-labels": (["distill", "--max-epochs", "1", "--labels", "scp:{t}/al.scp", "{model}", "ark:{feats}",
                        "{t}/al.ark"], "STUDENT_OUT", "--labels"),
    "compress-model-out": (["compress", "--rank", "4", "--check", "scp:{t}/tr.scp", "{model}", "{t}/tr.ark"],
                           "MODEL_OUT", "--check"),
    "compress-report": (["compress", "--rank", "4", "--check", "scp:{t}/tr.scp", "--report", "{t}/tr.ark",
                         "{model}", "{t}/o.nnet"], "--report", "--check"),
}


@pytest.mark.parametrize("case", list(SCP_OVERWRITES))
def test_output_onto_an_archive_an_input_scp_reads_is_refused(fixtures_dir, tmp_path, run_cli, clean_cli_error,
                                                               case):
    """An scp input reads the archives its lines name: an output there would destroy the data
    (and leave the scp pointing into a model)."""
    model = _fixture_copy(fixtures_dir, tmp_path, "tiny_mlp.nnet.txt")
    feats = _fixture_copy(fixtures_dir, tmp_path, "feats.ark")
    _scp_copy(tmp_path, fixtures_dir, "tr")
    _labels_scp(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    args, out_name, in_name = SCP_OVERWRITES[case]
    p = run_cli(*[a.format(model=model, feats=feats, t=tmp_path) for a in args])
    clean_cli_error(p, out_name, in_name, "reads from", "refusing to overwrite an input")
    assert {q: q.read_bytes() for q in tmp_path.iterdir()} == before


def _sh(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, env=env, timeout=120)


@posix
@pytest.mark.parametrize("args, user", [
    ("info {model}", "'svdistill info'"),
    ("info --json {model}", "'svdistill info'"),
    ("forward {model} ark:{feats} ark:-", "OUT_WSPECIFIER ark:-"),
    ("forward {model} ark:{feats} ark,t:-", "OUT_WSPECIFIER ark,t:-"),
    ("copy {model} -", "MODEL_OUT '-'"),
    ("compress --rank 4 {model} -", "MODEL_OUT '-'"),
    ("compare {model} {model} ark:{feats}", "'svdistill compare'"),
])
def test_a_closed_stdout_is_one_clear_line(fixtures_dir, tmp_path, args, user):
    cmd = args.format(model=fixtures_dir / "tiny_mlp.nnet.txt", feats=fixtures_dir / "feats.ark")
    p = _sh(f"{sys.executable} -m svdistill {cmd} >&-", tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 2 and err.splitlines() == [
        f"svdistill: error: standard output is closed, and {user} writes to it: redirect it to a file (or to "
        "/dev/null to discard it)"], err


@posix
@pytest.mark.parametrize("args, user", [
    ("forward {model} ark:- ark:o.ark", "FEATS_RSPECIFIER ark:-"),
    ("forward {model} ark,t:- ark:o.ark", "FEATS_RSPECIFIER ark,t:-"),
    ("info -", "MODEL -"),
    ("copy - o.nnet", "MODEL_IN -"),
    ("compare {model} {model} ark:-", "FEATS_RSPECIFIER ark:-"),
])
def test_a_closed_stdin_is_one_clear_line(fixtures_dir, tmp_path, args, user):
    cmd = args.format(model=fixtures_dir / "tiny_mlp.nnet.txt")
    p = _sh(f"{sys.executable} -m svdistill {cmd} <&-", tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 2 and err.splitlines() == [
        f"svdistill: error: standard input is closed, and {user} reads from it: give it a file or a pipe"], err
    assert list(tmp_path.iterdir()) == []


@posix
def test_a_closed_stdout_does_not_matter_to_a_command_that_does_not_use_it(fixtures_dir, tmp_path):
    """...and the output file opened first does not become descriptor 1."""
    p = _sh(f"{sys.executable} -m svdistill forward {fixtures_dir / 'tiny_mlp.nnet.txt'} "
            f"ark:{fixtures_dir / 'feats.ark'} ark:o.ark >&-", tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    from svdistill.archive import read_table
    assert [k for k, _ in read_table(f"ark:{tmp_path / 'o.ark'}")] == ["utt1", "utt2", "utt3"]


@posix
@pytest.mark.parametrize("args", ["copy {big} -", "copy --binary {big} -", "forward {big} ark:{feats} ark,t:-",
                                  "forward {big} ark:{feats} ark:-",
                                  "compress --rank 8 {big} -"])
def test_a_reader_that_goes_away_ends_every_command_quietly_with_141(big_text, fixtures_dir, tmp_path, args):
    """As '| head' does: the reader takes a few bytes and closes the pipe."""
    from svdistill.archive import read_table, write_table
    feats = tmp_path / "f.ark"
    _, m = next(iter(read_table(f"ark:{fixtures_dir / 'feats.ark'}")))
    write_table(f"ark:{feats}", [(f"u{i}", np.tile(np.hstack([m] * 11), (20, 1))) for i in range(20)])
    proc = _popen(*args.format(big=big_text, feats=feats).split(), cwd=tmp_path)
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, (proc.returncode, err)
    assert "error" not in err and "Traceback" not in err and "Exception" not in err, err


def test_exit_statuses_are_documented(run_cli):
    top = " ".join(run_cli("--help").stdout.decode().split())
    assert "141 the reader of standard output went away" in top and "129, 130, 143 SIGHUP" in top
    distill_help = " ".join(run_cli("distill", "--help").stdout.decode().split())
    assert "129 hangup (SIGHUP)" in distill_help


@posix
def test_version_to_a_reader_that_goes_away_is_quiet(tmp_path):
    """`svdistill --version | head -c 0`: printed while the arguments are parsed, before the
    commands' own handling, and as quiet (141, no traceback). The pipe's reader is closed
    before the command starts, so its write fails every time."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "svdistill", "--version"], stdout=w, stderr=subprocess.PIPE,
                           cwd=tmp_path, timeout=60)
    finally:
        os.close(w)
    err = p.stderr.decode()
    assert p.returncode == 141, (p.returncode, err)
    assert "Traceback" not in err and "Error" not in err, err
