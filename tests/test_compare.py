"""svdistill compare: teacher-vs-student fidelity on a feature archive (issue 5).

The statistics are recomputed here with numpy: the teacher's posteriors come from Kaldi's own
``dnn.fwd.ark`` and the student's from a numpy forward pass over its parameters.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict

import kaldiio
import numpy as np
import pytest

import svdistill
from svdistill import Component, Model

EXPECTED_KEYS = {"utterances", "frames", "top1_agreement", "kl", "cross_entropy", "teacher_entropy",
                 "max_abs_diff", "teacher_params", "student_params", "param_ratio"}


# ------------------------------------------------------------------ numpy reference


def np_forward(comps, x: np.ndarray) -> np.ndarray:
    """The component kinds of the dnn, its feature transform and a compressed student."""
    x = np.asarray(x, dtype=np.float64)
    for c in comps:
        k = c.kind
        p = {n: v.astype(np.float64) for n, v in c.params.items()}
        if k == "Splice":
            T = x.shape[0]
            idx = np.clip(np.arange(T)[:, None] + np.asarray(c.ints)[None, :], 0, T - 1)
            x = x[idx].reshape(T, -1)
        elif k == "AddShift":
            x = x + p["shift_data"]
        elif k == "Rescale":
            x = x * p["scale_data"]
        elif k == "AffineTransform":
            x = x @ p["linearity"].T + p["bias"]
        elif k == "LinearTransform":
            x = x @ p["linearity"].T
        elif k == "Sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        elif k == "Softmax":
            e = np.exp(x - x.max(1, keepdims=True))
            x = e / e.sum(1, keepdims=True)
        else:
            raise AssertionError(k)
    return x


def np_stats(P: Dict[str, np.ndarray], Q: Dict[str, np.ndarray]) -> Dict[str, float]:
    p = np.concatenate([P[k] for k in P]).astype(np.float64)
    q = np.concatenate([Q[k] for k in P]).astype(np.float64)
    n = p.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
        plogq = np.where(p > 0, p * np.log(q), 0.0)
    return {"frames": n, "utterances": len(P),
            "top1_agreement": float(np.mean(p.argmax(1) == q.argmax(1))),
            "kl": float((plogp - plogq).sum() / n),
            "cross_entropy": float(-plogq.sum() / n),
            "teacher_entropy": float(-plogp.sum() / n),
            "max_abs_diff": float(np.abs(p - q).max())}


def top1_margin(p: np.ndarray) -> np.ndarray:
    s = np.sort(p, axis=1)
    return s[:, -1] - s[:, -2]


def affine_params(m: Model) -> int:
    """Parameter count from the weight shapes (independent of num_params)."""
    n = 0
    for c in m.components:
        if c.kind in ("AffineTransform", "LinearTransform"):
            n += c.input_dim * c.output_dim + (c.output_dim if c.kind == "AffineTransform" else 0)
        else:
            assert c.kind in ("Sigmoid", "Softmax"), c.kind
    return n


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ft_path(fx) -> str:
    return str(fx / "final.feature_transform")


@pytest.fixture(scope="module")
def teacher_post(fx) -> Dict[str, np.ndarray]:
    """Kaldi's nnet-forward posteriors of the dnn (with final.feature_transform)."""
    return {k: np.asarray(v) for k, v in kaldiio.load_ark(str(fx / "dnn.fwd.ark"))}


@pytest.fixture(scope="module")
def api_result(fx, ft_path, students) -> Dict[int, dict]:
    """svdistill.compare(dnn, student) per rank, computed once."""
    return {rank: svdistill.compare(str(fx / "dnn.nnet.bin"), str(p), f"ark:{fx / 'feats.ark'}",
                                    feature_transform=ft_path) for rank, p in students.items()}


@pytest.fixture(scope="module")
def students(fx, tmp_path_factory) -> Dict[int, Path]:
    """dnn compressed in memory (rank 16 and 64), written to a temporary directory."""
    d = tmp_path_factory.mktemp("students")
    out = {}
    for rank in (16, 64):
        model, report = svdistill.compress(str(fx / "dnn.nnet.bin"), rank=rank)
        assert model is not None
        kinds = [c.kind for c in model.components]
        # layers are factored where rank x (in + out) < in x out: all four at rank 16,
        # 440x128 and 128x500 at rank 64 (128x128 would not shrink)
        assert kinds.count("LinearTransform") == {16: 4, 64: 2}[rank], kinds
        p = d / f"dnn.rank{rank}.nnet"
        svdistill.write(model, str(p))
        out[rank] = p
    return out


# ============================================================== teacher == student


@pytest.mark.parametrize("which", ["same-path", "same-object"])
def test_identical_models(which, fx, ft_path):
    t = str(fx / "dnn.nnet.bin")
    if which == "same-path":
        s = t
    else:
        t = s = svdistill.read(t)
    d = svdistill.compare(t, s, f"ark:{fx / 'feats.ark'}", feature_transform=ft_path)
    assert set(d) == EXPECTED_KEYS
    assert d["utterances"] == 3 and d["frames"] == 150
    assert d["top1_agreement"] == 1.0
    assert 0.0 <= d["kl"] < 1e-6
    assert d["max_abs_diff"] == 0.0
    assert d["cross_entropy"] == pytest.approx(d["teacher_entropy"], abs=1e-6)
    assert d["teacher_params"] == d["student_params"] == 153972
    assert d["param_ratio"] == 1.0


def test_identical_models_feature_transform_inside(fx):
    m = str(fx / "dnn_with_ft.nnet.bin")
    d = svdistill.compare(m, m, f"ark:{fx / 'feats.ark'}")
    assert d["top1_agreement"] == 1.0 and d["kl"] < 1e-6 and d["max_abs_diff"] == 0.0
    # the feature transform's AddShift/Rescale count as parameters of this model (nnet-info does too)
    assert d["teacher_params"] == 153972 + 2 * 440


def test_teacher_entropy_matches_kaldi_posteriors(fx, ft_path, teacher_post):
    t = str(fx / "dnn.nnet.bin")
    d = svdistill.compare(t, t, f"ark:{fx / 'feats.ark'}", feature_transform=ft_path)
    ref = np_stats(teacher_post, teacher_post)
    assert d["teacher_entropy"] == pytest.approx(ref["teacher_entropy"], rel=1e-5)
    # a random-init 500-class dnn: close to uniform, entropy just under log(500)
    assert 5.5 < d["teacher_entropy"] < np.log(500)


# ============================================================== against numpy


@pytest.mark.parametrize("rank", [16, 64])
def test_compressed_student_against_numpy(rank, fx, ft_path, feats, teacher_post, students, api_result):
    student = svdistill.read(students[rank])
    comps = list(svdistill.read(ft_path).components) + list(student.components)
    student_post = {k: np_forward(comps, m) for k, m in feats.items()}
    ref = np_stats(teacher_post, student_post)

    d = api_result[rank]
    assert set(d) == EXPECTED_KEYS
    assert (d["utterances"], d["frames"]) == (3, 150)
    # top-1: exact unless an arg-max is a near-tie (teacher or student) that float32 may flip
    p = np.concatenate(list(teacher_post.values()))
    q = np.concatenate(list(student_post.values()))
    near = int(np.sum((top1_margin(p) < 1e-6) | (top1_margin(q) < 1e-6)))
    assert abs(d["top1_agreement"] - ref["top1_agreement"]) * 150 <= near + 1e-9, (d, ref, near)
    assert d["kl"] == pytest.approx(ref["kl"], rel=1e-3, abs=1e-7)
    assert d["cross_entropy"] == pytest.approx(ref["cross_entropy"], rel=1e-5)
    assert d["teacher_entropy"] == pytest.approx(ref["teacher_entropy"], rel=1e-5)
    assert d["max_abs_diff"] == pytest.approx(ref["max_abs_diff"], rel=1e-3, abs=1e-7)
    assert d["kl"] == pytest.approx(d["cross_entropy"] - d["teacher_entropy"], rel=1e-9, abs=1e-12)
    assert d["kl"] > 1e-3  # a real difference

    tp = affine_params(svdistill.read(fx / "dnn.nnet.bin"))
    sp = affine_params(student)
    assert tp == 440 * 128 + 128 + 2 * (128 * 128 + 128) + 128 * 500 + 500 == 153972
    expect_sp = 0
    for i, o in [(440, 128), (128, 128), (128, 128), (128, 500)]:
        expect_sp += (rank * (i + o) if rank * (i + o) < i * o else i * o) + o
    assert sp == expect_sp
    if rank == 16:
        assert sp == 28212
    assert (d["teacher_params"], d["student_params"]) == (tp, sp)
    assert d["param_ratio"] == pytest.approx(sp / tp, rel=1e-12)


def test_rank_64_is_closer_than_rank_16(api_result):
    r = api_result
    assert r[64]["kl"] < r[16]["kl"]
    assert r[64]["max_abs_diff"] < r[16]["max_abs_diff"]
    assert r[64]["top1_agreement"] >= r[16]["top1_agreement"]
    assert r[64]["top1_agreement"] > 0.5


def test_in_memory_student_and_scp_input(fx, feats, tmp_path, api_result):
    """Model objects instead of paths, and an scp rspecifier: the same numbers."""
    base = api_result[16]
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'a.ark'},{tmp_path / 'a.scp'}") as w:
        for k, m in feats.items():
            w(k, m)
    mem, _ = svdistill.compress(str(fx / "dnn.nnet.bin"), rank=16)
    d = svdistill.compare(svdistill.read(fx / "dnn.nnet.bin"), mem, f"scp:{tmp_path / 'a.scp'}",
                          feature_transform=svdistill.read(fx / "final.feature_transform.bin"))
    for k in EXPECTED_KEYS:
        assert d[k] == pytest.approx(base[k], rel=1e-6, abs=1e-9), k


def test_swapped_roles_change_kl_not_agreement(fx, ft_path, students, api_result):
    t, s = str(fx / "dnn.nnet.bin"), str(students[64])
    a = api_result[64]
    b = svdistill.compare(s, t, f"ark:{fx / 'feats.ark'}", feature_transform=ft_path)
    assert a["top1_agreement"] == b["top1_agreement"]
    assert a["max_abs_diff"] == b["max_abs_diff"]
    assert (a["teacher_params"], a["student_params"]) == (b["student_params"], b["teacher_params"])
    assert a["param_ratio"] == pytest.approx(1 / b["param_ratio"])
    assert a["kl"] != pytest.approx(b["kl"], rel=1e-6)  # KL is not symmetric


# ============================================================== CLI


def test_cli_table(fx, ft_path, students, run_cli, api_result):
    p = run_cli("compare", fx / "dnn.nnet.bin", students[16], f"ark:{fx / 'feats.ark'}",
                "--feature-transform", ft_path)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    d = api_result[16]
    rows = {}
    for line in out.strip().splitlines():
        label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        rows[label] = value
    assert list(rows) == ["utterances / frames", "top-1 agreement", "KL(teacher || student)",
                          "cross-entropy", "max |p_t - p_s|", "parameters"], out
    assert rows["utterances / frames"] == "3 / 150"
    assert float(rows["top-1 agreement"].rstrip("%")) == pytest.approx(100 * d["top1_agreement"], abs=0.006)
    kl = float(re.match(r"([0-9.]+) nats/frame$", rows["KL(teacher || student)"]).group(1))
    assert kl == pytest.approx(d["kl"], abs=6e-6)
    m = re.match(r"([0-9.]+) \(teacher entropy ([0-9.]+)\)$", rows["cross-entropy"])
    assert float(m.group(1)) == pytest.approx(d["cross_entropy"], abs=6e-6)
    assert float(m.group(2)) == pytest.approx(d["teacher_entropy"], abs=6e-6)
    assert float(rows["max |p_t - p_s|"]) == pytest.approx(d["max_abs_diff"], abs=6e-6)
    m = re.match(r"([0-9,]+) -> ([0-9,]+) \(([0-9.]+)%\)$", rows["parameters"])
    assert int(m.group(1).replace(",", "")) == d["teacher_params"] == 153972
    assert int(m.group(2).replace(",", "")) == d["student_params"]
    assert float(m.group(3)) == pytest.approx(100 * d["param_ratio"], abs=0.06)


def test_cli_json(fx, ft_path, students, run_cli, api_result):
    p = run_cli("compare", fx / "dnn.nnet.bin", students[64], f"ark:{fx / 'feats.ark'}",
                f"--feature-transform={ft_path}", "--json=true")
    assert p.returncode == 0, p.stderr.decode()
    j = json.loads(p.stdout.decode())
    assert set(j) == EXPECTED_KEYS
    d = api_result[64]
    # (the CLI runs with OPENBLAS_NUM_THREADS=1: GEMM sums in another order, hence rel 1e-5)
    for k in EXPECTED_KEYS:
        assert j[k] == pytest.approx(d[k], rel=1e-5, abs=1e-9), k
    for k in ("utterances", "frames", "teacher_params", "student_params", "top1_agreement"):
        assert j[k] == d[k], k
    assert isinstance(j["frames"], int) and isinstance(j["teacher_params"], int)


def test_cli_identical_models_json(fx, run_cli):
    m = fx / "tiny_mlp.nnet.bin"
    p = run_cli("compare", m, fx / "tiny_mlp.nnet.txt", f"ark:{fx / 'feats.ark'}", "--json")
    assert p.returncode == 0, p.stderr.decode()
    j = json.loads(p.stdout)
    assert j["top1_agreement"] == 1.0 and j["max_abs_diff"] == 0.0 and j["kl"] < 1e-6
    assert j["param_ratio"] == 1.0 and j["frames"] == 150


# ============================================================== errors


def _wider_student(fx, out_dim: int) -> Model:
    """dnn with its output layer replaced by a 128 -> out_dim softmax layer."""
    comps = list(svdistill.read(fx / "dnn.nnet.bin").components)[:-2]
    rng = np.random.default_rng(0)
    return Model(comps + [Component.affine(rng.standard_normal((out_dim, 128)).astype(np.float32) * 0.1,
                                           np.zeros(out_dim, np.float32)),
                          Component.activation("Softmax", out_dim)])


def test_mismatched_output_dims(fx, ft_path, tmp_path, run_cli, clean_cli_error):
    s = _wider_student(fx, 400)
    with pytest.raises(svdistill.Error) as ei:
        svdistill.compare(str(fx / "dnn.nnet.bin"), s, f"ark:{fx / 'feats.ark'}", feature_transform=ft_path)
    assert "500" in str(ei.value) and "400" in str(ei.value)
    path = tmp_path / "s.nnet"
    svdistill.write(s, str(path))
    p = run_cli("compare", fx / "dnn.nnet.bin", path, f"ark:{fx / 'feats.ark'}", "--feature-transform", ft_path)
    clean_cli_error(p, "500", "400")


def test_mismatched_input_dims(fx):
    s = Model([Component.affine(np.zeros((500, 40), np.float32)), Component.activation("Softmax", 500)])
    with pytest.raises(svdistill.Error, match="440"):
        svdistill.compare(str(fx / "dnn.nnet.bin"), s, f"ark:{fx / 'feats.ark'}")


def test_wrong_feature_dims_names_the_utterance(fx, tmp_path, run_cli, clean_cli_error):
    ark = tmp_path / "f.ark"
    with kaldiio.WriteHelper(f"ark:{ark}") as w:
        w("spk1-utt9", np.zeros((4, 13), np.float32))
    t = str(fx / "tiny_mlp.nnet.bin")
    with pytest.raises(svdistill.Error, match="spk1-utt9"):
        svdistill.compare(t, t, f"ark:{ark}")
    clean_cli_error(run_cli("compare", t, t, f"ark:{ark}"), "spk1-utt9")


def test_empty_archive(fx, tmp_path):
    ark = tmp_path / "empty.ark"
    ark.write_bytes(b"")
    t = str(fx / "tiny_mlp.nnet.bin")
    with pytest.raises(svdistill.Error, match="no utterances"):
        svdistill.compare(t, t, f"ark:{ark}")


def test_unsupported_component_in_student(fx, tmp_path, run_cli, clean_cli_error):
    p = tmp_path / "foo.nnet"
    p.write_text("<Nnet>\n<AffineTransform> 10 40\n[\n" + "\n".join(" ".join(["0"] * 40) for _ in range(10))
                 + " ]\n[ " + " ".join(["0"] * 10) + " ]\n<Foo> 10 10\n<!EndOfComponent>\n</Nnet>\n")
    t = str(fx / "tiny_mlp.nnet.bin")
    with pytest.raises(svdistill.Error, match="<Foo>"):
        svdistill.compare(t, str(p), f"ark:{fx / 'feats.ark'}")
    clean_cli_error(run_cli("compare", t, p, f"ark:{fx / 'feats.ark'}"), "component 2", "<Foo>")
