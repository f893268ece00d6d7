"""One computation of teacher-student fidelity (issue 16 item 4): the core's
``compare_logits`` (nn/stats) against a float64 reference, and `svdistill compare`
agreeing with distill's CV columns, which use the same per-block function."""
from __future__ import annotations

import numpy as np
import pytest

import svdistill
from svdistill import Component, Model, _core


def _reference(zt: np.ndarray, zs: np.ndarray, blocks):
    out = dict(agree=0, kl=0.0, cross_entropy=0.0, teacher_entropy=0.0, max_abs_diff=0.0)
    lo = 0
    for w in blocks:
        a, b = zt[:, lo:lo + w].astype(np.float64), zs[:, lo:lo + w].astype(np.float64)
        lq = a - a.max(1, keepdims=True)
        lq -= np.log(np.exp(lq).sum(1, keepdims=True))
        lp = b - b.max(1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(1, keepdims=True))
        q = np.exp(lq)
        out["cross_entropy"] += float(-(q * lp).sum())
        out["teacher_entropy"] += float(-(q * lq).sum())
        out["kl"] += float(np.maximum((q * (lq - lp)).sum(1), 0).sum())
        out["agree"] += int((a.argmax(1) == b.argmax(1)).sum())
        out["max_abs_diff"] = max(out["max_abs_diff"], float(np.abs(q - np.exp(lp)).max()))
        lo += w
    return out


@pytest.mark.parametrize("blocks", [[40], [7, 13, 20], [1, 39]])
def test_compare_logits_equals_a_float64_reference(blocks):
    rng = np.random.default_rng(len(blocks))
    zt = (3 * rng.standard_normal((257, 40))).astype(np.float32)
    zs = (zt + rng.standard_normal(zt.shape)).astype(np.float32)
    zs[5] = zt[5]  # an exact match: KL 0, agreement in every block
    got = _core.compare_logits(zt, zs, blocks)
    ref = _reference(zt, zs, blocks)
    assert got["frames"] == 257 and got["blocks"] == 257 * len(blocks)
    assert got["agree"] == ref["agree"]
    for k in ("kl", "cross_entropy", "teacher_entropy", "max_abs_diff"):
        assert got[k] == pytest.approx(ref[k], rel=1e-10, abs=1e-12), k


def test_compare_logits_refuses_blocks_that_do_not_cover_the_outputs():
    z = np.zeros((3, 10), np.float32)
    with pytest.raises(svdistill.Error, match="sum to 9"):
        _core.compare_logits(z, z, [4, 5])
    with pytest.raises(svdistill.Error, match="positive"):
        _core.compare_logits(z, z, [10, 0])
    with pytest.raises(svdistill.Error, match="shape"):
        _core.compare_logits(z, np.zeros((3, 9), np.float32), [10])


def _block_softmax_pair(rng):
    """A teacher and a student ending in the same <BlockSoftmax> (12 = 5 + 7 outputs)."""
    def net(scale):
        w1 = (scale * rng.standard_normal((16, 8))).astype(np.float32)
        w2 = (scale * rng.standard_normal((12, 16))).astype(np.float32)
        comps = [Component.affine(w1, np.zeros(16, np.float32)), Component.activation("Sigmoid", 16),
                 Component.affine(w2, np.zeros(12, np.float32))]
        text = b"<Nnet>\n<BlockSoftmax> 12 12\n[ 5 7 ]\n<!EndOfComponent>\n</Nnet>\n"
        import io
        return Model(comps + list(svdistill.read(io.BytesIO(text)).components))
    return net(1.0), net(0.5)


def test_compare_agrees_with_distills_cv_columns_for_a_block_softmax():
    """distill's epoch-0 row is the student before training, evaluated on cv_feats by the
    trainer; compare on the same features computes it again through compare_logits."""
    rng = np.random.default_rng(3)
    teacher, student = _block_softmax_pair(rng)
    feats = {f"u{i}": rng.standard_normal((30, 8)).astype(np.float32) for i in range(12)}
    cv = {f"c{i}": rng.standard_normal((25, 8)).astype(np.float32) for i in range(4)}
    _, report = svdistill.distill(student, feats, teacher=teacher, cv_feats=cv, max_epochs=1)
    row = report.epochs[0]
    d = svdistill.compare(teacher, student, cv)
    assert row.cv_kl == pytest.approx(d["kl"], rel=1e-5)
    assert row.cv_agreement == pytest.approx(d["top1_agreement"], abs=1e-12)
