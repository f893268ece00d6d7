"""The command line of specialist ensembles: ``svdistill specialists``, ``forward --ensemble``
and ``compare --teacher-ensemble`` (issue 18), against the Python API they call
(svdistill.specialists) and against numpy."""
from __future__ import annotations

import json
import os

import kaldiio
import numpy as np
import pytest

import svdistill
from svdistill import Component, Model
from svdistill.forward import forward_archive
from svdistill.specialists import Ensemble, specialists

# Enough training to give the specialists something to do, in well under a second.
TRAIN = dict(optimizer="adam", learn_rate=0.01, minibatch_size=16, max_epochs=2)
TRAIN_FLAGS = ["--optimizer", "adam", "--learn-rate", "0.01", "--minibatch-size", "16", "--max-epochs", "2"]
C = 6  # classes


def load_ark(path) -> dict:
    return {k: np.asarray(v) for k, v in kaldiio.load_ark(str(path))}


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six Gaussian classes in 6 dims (utterances of 8 frames), a feature transform that
    halves the features, a generalist trained on them, and its ensemble of 2 specialists of 2
    classes each (made by the API), all as files."""
    d = tmp_path_factory.mktemp("ensemble")
    rng = np.random.default_rng(11)
    centres = 3 * rng.standard_normal((C, 6))
    y = rng.permutation(np.repeat(np.arange(C), 40))
    x = (centres[y] + rng.standard_normal((len(y), 6))).astype(np.float32) * 2
    feats = {f"u{i:03d}": x[i:i + 8] for i in range(0, len(x), 8)}
    labels = {f"u{i:03d}": y[i:i + 8].astype(np.int32) for i in range(0, len(x), 8)}
    with kaldiio.WriteHelper(f"ark:{d / 'train.ark'}") as w:
        for k, v in feats.items():
            w(k, v)
    with kaldiio.WriteHelper(f"ark:{d / 'ali.ark'}") as w:
        for k, v in labels.items():
            w(k, v)
    ft = Model([Component.activation("Rescale", 6)])
    ft.components[0].params["scale_data"][...] = 0.5
    ft.write(d / "ft.nnet")
    w1, w2 = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((C, 8)).astype(np.float32)
    g = Model([Component.affine(w1, np.zeros(8, np.float32)), Component.activation("Sigmoid", 8),
               Component.affine(w2, np.zeros(C, np.float32)), Component.activation("Softmax", C)])
    g, _ = svdistill.distill(g, feats, labels=labels, feature_transform=ft, **TRAIN)
    g.write(d / "g.nnet")
    res = specialists(str(d / "g.nnet"), feats, d / "ens", feature_transform=str(d / "ft.nnet"), num_specialists=2,
                      classes_per_specialist=2, labels=labels, **TRAIN)
    student, _ = svdistill.compress(g, rank=3)
    student.write(d / "student.nnet")
    return {"dir": d, "feats": feats, "labels": labels, "ensemble": res.ensemble, "classes": res.classes,
            "generalist": d / "g.nnet", "ft": d / "ft.nnet", "student": d / "student.nnet",
            "train": f"ark:{d / 'train.ark'}", "ali": f"ark:{d / 'ali.ark'}"}


def _generalist_posteriors(data, x):
    return svdistill.forward(str(data["generalist"]), x, feature_transform=str(data["ft"]))


# -- svdistill specialists ----------------------------------------------------------------

def test_specialists_command_writes_the_models_ensemble_and_table(data, run_cli, tmp_path):
    out = tmp_path / "spec"
    report = tmp_path / "r.json"
    p = run_cli("specialists", "--generalist", data["generalist"], "--feature-transform", data["ft"],
                "--num-specialists", "2", "--classes-per-specialist", "2", "--labels", data["ali"],
                "--temperature", "3", "--hard-weight", "0.3", *TRAIN_FLAGS, "--report", report,
                data["train"], out)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert p.stdout == b""
    assert sorted(os.listdir(out)) == ["ensemble.json", "specialist-0.nnet", "specialist-1.nnet"]
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["generalist"] == str(data["generalist"]) and spec["feature_transform"] == str(data["ft"])
    # The API, given the same data and options, clusters the same way.
    assert [s["classes"] for s in spec["specialists"]] == data["classes"]
    assert spec["clustering"]["num_specialists"] == 2 and spec["clustering"]["classes_per_specialist"] == 2
    # The training options reached distill, for each specialist.
    r = json.loads(report.read_text())
    assert r["ensemble"] == str(out / "ensemble.json")
    assert [s["index"] for s in r["specialists"]] == [0, 1]
    for s, classes in zip(r["specialists"], data["classes"]):
        assert s["classes"] == classes and s["file"] == str(out / f"specialist-{s['index']}.nnet")
        t = s["distill"]
        assert t["temperature"] == 3.0 and t["hard_weight"] == 0.3 and t["teachers"] == 1
        assert len(t["epochs"]) == 3 and t["epochs"][1]["learn_rate"] == pytest.approx(0.01)
        assert svdistill.read(s["file"]).output_dim == len(classes) + 1
    # Each specialist's per-epoch table under its name, then one line each, then ensemble.json.
    lines = err.splitlines()
    heads = [line.split(":")[0] for line in lines if line.startswith("specialist ") and "classes," in line]
    assert heads == ["specialist 0", "specialist 1"], lines
    assert lines[lines.index(next(x for x in lines if x.startswith("specialist 0: "))) + 1].startswith("epoch")
    assert lines[-1] == f"ensemble: {out / 'ensemble.json'}"
    head = lines[-4].split()
    assert head[:2] == ["specialist", "classes"] and "cv KL" in lines[-4] and "cv agr" in lines[-4]
    for row, s in zip(lines[-3:-1], r["specialists"]):
        t = s["distill"]
        best = t["epochs"][t["best_epoch"]]
        cells = row.split()
        assert cells[0] == str(s["index"])
        assert f"  {len(s['classes'])}: {' '.join(map(str, s['classes']))}  " in row
        assert cells[-3] == str(t["best_epoch"])
        assert cells[-2] == f"{best['cv_kl']:.4f}" and cells[-1] == f"{best['cv_agreement']:.2%}"
        assert cells[-4] == f"{t['cv_frames']:,}"
        assert cells[-5] == f"{max(e['train_frames'] for e in t['epochs']):,}"
        assert s["init_dustbin_rms"] >= 0


def test_specialists_only_trains_one(data, run_cli, tmp_path):
    out = tmp_path / "one"
    p = run_cli("specialists", "--generalist", data["generalist"], "--feature-transform", data["ft"],
                "--num-specialists", "2", "--classes-per-specialist", "2", "--labels", data["ali"], "--only", "1",
                *TRAIN_FLAGS, data["train"], out)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert sorted(os.listdir(out)) == ["ensemble.json", "specialist-1.nnet"]
    lines = err.splitlines()
    assert [x for x in lines if x.startswith("specialist 1: 2 classes, ")] and \
        not [x for x in lines if x.startswith("specialist 0: ")]
    assert lines[-2].split()[0] == "1" and lines[-3].split()[0] == "specialist"


def test_specialists_errors_name_the_flags(data, run_cli, clean_cli_error, tmp_path):
    common = ["--generalist", data["generalist"], *TRAIN_FLAGS]
    clean_cli_error(run_cli("specialists", *common, "--num-specialists", "2", "--only", "2", data["train"],
                            tmp_path / "a"), "--only must be below --num-specialists (2)")
    clean_cli_error(run_cli("specialists", *common, "--classes-per-specialist", "6", data["train"], tmp_path / "b"),
                    "--classes-per-specialist must be below the number of classes")
    clean_cli_error(run_cli("specialists", *common, "--minibatch-size", "0", data["train"], tmp_path / "c"),
                    "--minibatch-size")
    folder_is_a_file = tmp_path / "file"
    folder_is_a_file.write_text("x")
    clean_cli_error(run_cli("specialists", *common, data["train"], folder_is_a_file), "OUTDIR", "is not a folder")
    inside = tmp_path / "e"
    inside.mkdir()
    (inside / "specialist-1.nnet").write_bytes(data["generalist"].read_bytes())
    before = sorted(os.listdir(inside))
    clean_cli_error(run_cli("specialists", "--generalist", inside / "specialist-1.nnet", *TRAIN_FLAGS,
                            "--num-specialists", "2", data["train"], inside),
                    "--generalist", "is OUTDIR's specialist-1.nnet", "refusing to overwrite an input")
    assert sorted(os.listdir(inside)) == before
    p = run_cli("specialists", *TRAIN_FLAGS, data["train"], tmp_path / "d")
    assert p.returncode == 2 and b"usage: svdistill specialists" in p.stderr and b"--generalist" in p.stderr


# -- svdistill forward --ensemble ---------------------------------------------------------

@pytest.mark.parametrize("top_n", [None, 2])
def test_forward_ensemble_is_the_combination(data, run_cli, tmp_path, top_n):
    out = tmp_path / "q.ark"
    opts = [] if top_n is None else ["--top-n", str(top_n)]
    p = run_cli("forward", "--ensemble", data["ensemble"], *opts, data["train"], f"ark:{out}")
    assert p.returncode == 0, p.stderr.decode()
    got = load_ark(out)
    ens = Ensemble(data["ensemble"])
    assert list(got) == list(data["feats"])
    differs = 0
    for k, x in data["feats"].items():
        want = ens(x) if top_n is None else ens(x, top_n=top_n)
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6)
        differs += int((np.abs(got[k] - _generalist_posteriors(data, x)) > 1e-3).any(1).sum())
    assert differs > 0  # the specialists take part: q is not the generalist's posteriors
    if top_n == 2:
        default = {k: ens(x) for k, x in data["feats"].items()}
        assert any(not np.allclose(got[k], default[k], atol=1e-4) for k in got)


def test_forward_ensemble_apply_log_and_priors(data, run_cli, tmp_path):
    counts = np.array([10, 20, 30, 40, 50, 60], np.float64)
    cf = tmp_path / "counts"
    cf.write_text("[ " + " ".join(f"{c:g}" for c in counts) + " ]\n")
    out = tmp_path / "q.ark"
    # Options between the positional arguments, as anywhere else.
    p = run_cli("forward", data["train"], "--ensemble", data["ensemble"], "--apply-log",
                "--class-frame-counts", cf, "--prior-scale", "0.5", f"ark:{out}")
    assert p.returncode == 0, p.stderr.decode()
    got = load_ark(out)
    ens = Ensemble(data["ensemble"])
    log_priors = np.log(counts / counts.sum())
    for k, x in data["feats"].items():
        want = np.log(ens(x).astype(np.float64) + 1e-20) - 0.5 * log_priors
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-5)


def test_forward_with_a_model_still_takes_options_between_its_arguments(data, run_cli, tmp_path):
    out = tmp_path / "p.ark"
    p = run_cli("forward", data["generalist"], "--apply-log", data["train"], "--feature-transform", data["ft"],
                f"ark:{out}")
    assert p.returncode == 0, p.stderr.decode()
    for k, v in load_ark(out).items():
        np.testing.assert_allclose(v, np.log(_generalist_posteriors(data, data["feats"][k]) + 1e-20), rtol=1e-5,
                                   atol=1e-5)


def test_forward_ensemble_api(data, tmp_path):
    out = tmp_path / "q.ark"
    n = forward_archive(None, data["train"], f"ark:{out}", ensemble=Ensemble(data["ensemble"]),
                                          top_n=2)
    assert n == (len(data["feats"]), sum(len(v) for v in data["feats"].values()))
    ens = Ensemble(data["ensemble"])
    for k, v in load_ark(out).items():
        np.testing.assert_allclose(v, ens(data["feats"][k], top_n=2), rtol=1e-5, atol=1e-6)
    with pytest.raises(svdistill.Error, match="ensemble names the models to run in place of model: give one of them"):
        forward_archive(str(data["generalist"]), data["train"], f"ark:{out}",
                                          ensemble=data["ensemble"])
    with pytest.raises(svdistill.Error, match="model is missing"):
        forward_archive(None, data["train"], f"ark:{out}")


def test_forward_ensemble_warns_about_unconverged_frames(data, run_cli, tmp_path):
    p = run_cli("forward", "--ensemble", data["ensemble"], "--top-n", "6", "--max-iterations", "1",
                "--tolerance", "1e-12", data["train"], f"ark:{tmp_path / 'q.ark'}")
    assert p.returncode == 0, p.stderr.decode()
    frames = sum(len(v) for v in data["feats"].values())
    assert f"svdistill: warning: the combination of {frames} of {frames} frames stopped at max_iterations (1)" \
        in p.stderr.decode()
    p = run_cli("forward", "--ensemble", data["ensemble"], data["train"], f"ark:{tmp_path / 'q.ark'}")
    assert b"warning" not in p.stderr


@pytest.mark.parametrize("args, words", [
    (["forward", "{g}", "{feats}", "ark:{tmp}/o.ark", "--ensemble", "{e}"], "--ensemble is in place of MODEL"),
    (["forward", "{feats}", "ark:{tmp}/o.ark"],
     "expected MODEL FEATS_RSPECIFIER OUT_WSPECIFIER, or --ensemble ENSEMBLE.json FEATS_RSPECIFIER OUT_WSPECIFIER; "
     "got 2 arguments"),
    (["forward", "{g}", "{feats}"], "got 2 arguments"),
    (["forward", "--ensemble", "{e}", "{feats}"], "required: OUT_WSPECIFIER"),
    (["compare", "--teacher-ensemble", "{e}", "{g}", "{g}", "{feats}"], "--teacher-ensemble is in place of TEACHER"),
    (["compare", "{g}", "{feats}"], "or --teacher-ensemble ENSEMBLE.json STUDENT FEATS_RSPECIFIER; got 2"),
    (["forward", "--ensemble", "{e}", "{feats}", "ark:{tmp}/o.ark", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_usage_errors(data, run_cli, tmp_path, args, words):
    fill = dict(g=data["generalist"], feats=data["train"], e=data["ensemble"], tmp=tmp_path)
    p = run_cli(*[a.format(**fill) for a in args])
    err = p.stderr.decode()
    assert p.returncode == 2 and "Traceback" not in err, err
    assert err.startswith("usage: svdistill") and words in err, err
    assert not (tmp_path / "o.ark").exists()


@pytest.mark.parametrize("args", [
    ["forward", "{g}", "--apply-log", "--", "{feats}", "ark:{tmp}/o.ark"],
    ["forward", "{g}", "--apply-log", "{feats}", "--", "ark:{tmp}/o.ark"],
    ["forward", "--", "{g}", "{feats}", "ark:{tmp}/o.ark"],
    ["forward", "--ensemble", "{e}", "--", "{feats}", "ark:{tmp}/o.ark"],
])
def test_double_dash_ends_the_options(data, run_cli, tmp_path, args):
    fill = dict(g=data["generalist"], feats=data["train"], e=data["ensemble"], tmp=tmp_path)
    p = run_cli(*[a.format(**fill) for a in args])
    assert p.returncode == 0, p.stderr.decode()
    assert (tmp_path / "o.ark").exists()


def test_double_dash_compare(data, run_cli):
    p = run_cli("compare", data["generalist"], data["student"], "--json", "--", data["train"])
    assert p.returncode == 0 and json.loads(p.stdout)["frames"] == 240, p.stderr.decode()


@pytest.mark.parametrize("args, words", [
    (["--no-softmax"], ["--no-softmax", "--ensemble gives posteriors only"]),
    (["--feature-transform", "{g}"], ["--feature-transform differs from the one --ensemble names"]),
    (["--top-n", "0"], ["--top-n must be >= 1, got 0"]),
    (["--top-n", "7"], ["--top-n must be at most the classes (6)"]),
    (["--tolerance", "0"], ["--tolerance must be a finite number > 0"]),
])
def test_forward_ensemble_refusals(data, run_cli, clean_cli_error, tmp_path, args, words):
    args = [a.format(g=data["generalist"]) for a in args]
    p = run_cli("forward", "--ensemble", data["ensemble"], *args, data["train"], f"ark:{tmp_path / 'o.ark'}")
    clean_cli_error(p, *words)
    assert not (tmp_path / "o.ark").exists()


def test_forward_ensemble_takes_its_own_feature_transform(data, run_cli, tmp_path):
    """The ensemble's own feature transform, given, changes nothing (it runs once, not twice)."""
    outs = []
    for extra in ([], ["--feature-transform", str(data["ft"])]):
        o = tmp_path / f"o{len(outs)}.ark"
        p = run_cli("forward", "--ensemble", data["ensemble"], *extra, data["train"], f"ark:{o}")
        assert p.returncode == 0, p.stderr.decode()
        outs.append(o.read_bytes())
    assert outs[0] == outs[1]


def test_combination_options_need_an_ensemble(data, run_cli, clean_cli_error, tmp_path):
    for flag, value in (("--top-n", "2"), ("--tolerance", "1e-3"), ("--max-iterations", "5")):
        clean_cli_error(run_cli("forward", flag, value, data["generalist"], data["train"], f"ark:{tmp_path / 'o'}"),
                        f"{flag} applies to the combination of --ensemble, and none was given")
        clean_cli_error(run_cli("compare", flag, value, data["generalist"], data["student"], data["train"]),
                        f"{flag} applies to the combination of --teacher-ensemble, and none was given")


# -- svdistill compare --teacher-ensemble -------------------------------------------------

@pytest.mark.parametrize("top_n", [None, 2])
def test_compare_teacher_ensemble(data, run_cli, top_n):
    opts = [] if top_n is None else ["--top-n", str(top_n)]
    p = run_cli("compare", "--json", "--teacher-ensemble", data["ensemble"], *opts, data["student"], data["train"])
    assert p.returncode == 0, p.stderr.decode()
    got = json.loads(p.stdout)
    kw = {} if top_n is None else {"top_n": top_n}
    api = svdistill.compare(None, str(data["student"]), data["train"], teacher_ensemble=data["ensemble"], **kw)
    assert got.keys() == api.keys()
    for k in got:
        assert got[k] == pytest.approx(api[k], rel=1e-5, abs=1e-7), k
    # Against numpy: the teacher's distribution is q, the student runs after the ensemble's
    # feature transform.
    ens = Ensemble(data["ensemble"])
    q = np.concatenate([ens(x, **kw) for x in data["feats"].values()]).astype(np.float64)
    x = np.concatenate(list(data["feats"].values()))
    ls = np_log_softmax(svdistill.forward(str(data["student"]), x, feature_transform=str(data["ft"]),
                                          no_softmax=True))
    lq = np.log(q + 1e-20)
    assert got["frames"] == len(x) and got["utterances"] == len(data["feats"])
    assert got["kl"] == pytest.approx(np.mean((q * (lq - ls)).sum(1)), rel=1e-3, abs=1e-6)
    assert got["teacher_entropy"] == pytest.approx(np.mean(-(q * lq).sum(1)), rel=1e-4)
    assert got["cross_entropy"] == pytest.approx(np.mean(-(q * ls).sum(1)), rel=1e-4)
    assert got["top1_agreement"] == pytest.approx(np.mean(q.argmax(1) == ls.argmax(1)))
    assert got["max_abs_diff"] == pytest.approx(np.abs(q - np.exp(ls)).max(), abs=1e-5)
    teacher_params = sum(m.num_params for m in [ens.generalist, *ens.specialists])
    assert got["teacher_params"] == teacher_params
    assert got["student_params"] == svdistill.read(data["student"]).num_params
    # The generalist alone as the teacher gives other figures: the ensemble is what was compared.
    alone = svdistill.compare(str(data["generalist"]), str(data["student"]), data["train"],
                              feature_transform=str(data["ft"]))
    assert alone["teacher_entropy"] != pytest.approx(got["teacher_entropy"], rel=1e-4)


def test_compare_teacher_ensemble_feature_transform(data, run_cli, clean_cli_error, tmp_path):
    base = ["compare", "--json", "--teacher-ensemble", data["ensemble"], data["student"], data["train"]]
    same = run_cli(*base, "--feature-transform", data["ft"])  # the ensemble's own: accepted
    assert same.returncode == 0, same.stderr.decode()
    assert json.loads(same.stdout) == json.loads(run_cli(*base).stdout)
    other = Model([Component.activation("Rescale", 6)])
    other.components[0].params["scale_data"][...] = 0.25
    other.write(tmp_path / "other.nnet")
    clean_cli_error(run_cli(*base, "--feature-transform", tmp_path / "other.nnet"),
                    "--feature-transform differs from the one --teacher-ensemble names")


# -- svdistill distill --teacher-ensemble / --hint-weight -----------------------------------

def test_distill_command_takes_the_ensemble_as_teacher(data, run_cli, tmp_path):
    """The flags reach distill(): the report names the ensemble, the combination's options are
    its, and the student ends closer to the ensemble than it started."""
    out, rep = tmp_path / "s.nnet", tmp_path / "r.json"
    p = run_cli("distill", "--teacher-ensemble", data["ensemble"], "--top-n", "2", *TRAIN_FLAGS, "--report", rep,
                data["student"], data["train"], out)
    assert p.returncode == 0, p.stderr.decode()
    r = json.loads(rep.read_text())
    assert r["teacher_ensemble"] == "1 generalist + 2 specialists" and r["teachers"] == 1
    kl = [e["cv_kl"] for e in r["epochs"]]
    assert min(kl[1:]) < kl[0]
    before = svdistill.compare(None, data["student"], data["train"], teacher_ensemble=data["ensemble"], top_n=2)
    after = svdistill.compare(None, str(out), data["train"], teacher_ensemble=data["ensemble"], top_n=2)
    assert after["kl"] < before["kl"]


def test_distill_command_hints(data, run_cli, tmp_path):
    out, rep = tmp_path / "s.nnet", tmp_path / "r.json"
    p = run_cli("distill", "--teacher", data["generalist"], "--feature-transform", data["ft"], "--hint-weight", "2",
                "--hint-layers", "1", *TRAIN_FLAGS, "--report", rep, data["student"], data["train"], out)
    assert p.returncode == 0, p.stderr.decode()
    r = json.loads(rep.read_text())
    assert r["hint_weight"] == 2 and all(e["cv_hint"] is not None for e in r["epochs"])
    assert "hint" in p.stderr.decode().splitlines()[0]  # the table's header has the hint columns


def test_distill_command_refuses_hints_with_an_ensemble(data, run_cli, clean_cli_error, tmp_path):
    clean_cli_error(run_cli("distill", "--teacher-ensemble", data["ensemble"], "--hint-weight", "1",
                            data["student"], data["train"], tmp_path / "s.nnet"),
                    "--hint-weight matches the activations of one teacher model", "--teacher-ensemble")
    clean_cli_error(run_cli("distill", "--teacher", data["generalist"], "--teacher-ensemble", data["ensemble"],
                            data["student"], data["train"], tmp_path / "s.nnet"),
                    "--teacher-ensemble names the models to run in place of --teacher")
    assert not (tmp_path / "s.nnet").exists()
