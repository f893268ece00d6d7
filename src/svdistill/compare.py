"""How close a student is to its teacher on real features: the fidelity check."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .errors import Error
from .forward import ModelLike, Network, iter_archive


def compare(teacher: ModelLike, student: ModelLike, feats_rspecifier: str, *,
            feature_transform: Optional[ModelLike] = None) -> Dict[str, Any]:
    """Teacher-vs-student statistics over every frame of an archive.

    Returns
    -------
    dict
        ``frames``, ``utterances``, ``top1_agreement`` (fraction of frames where the
        arg-max class agrees), ``kl`` (mean KL(teacher || student), nats),
        ``cross_entropy`` (mean -sum p_teacher log p_student), ``teacher_entropy``,
        ``max_abs_diff`` (largest |p_teacher - p_student|), ``teacher_params``,
        ``student_params`` and ``param_ratio``.
    """
    t = Network(teacher, feature_transform=feature_transform)
    s = Network(student, feature_transform=feature_transform)
    if t.output_dim != s.output_dim:
        raise Error(f"teacher outputs {t.output_dim} dims, student {s.output_dim}")
    if t.input_dim != s.input_dim:
        raise Error(f"teacher expects {t.input_dim} input dims, student {s.input_dim}")
    frames = utts = agree = 0
    kl = ce = ent = 0.0
    max_diff = 0.0
    tiny = 1e-20
    for key, mat in iter_archive(feats_rspecifier):
        if mat.shape[1] != t.input_dim:
            raise Error(f"utterance {key}: features have {mat.shape[1]} dims, the networks expect "
                        f"{t.input_dim}")
        p = t(mat).astype(np.float64)
        q = s(mat).astype(np.float64)
        logp = np.log(p + tiny)
        logq = np.log(q + tiny)
        ce += float(-(p * logq).sum())
        ent += float(-(p * logp).sum())
        agree += int((p.argmax(1) == q.argmax(1)).sum())
        max_diff = max(max_diff, float(np.abs(p - q).max()) if p.size else 0.0)
        frames += mat.shape[0]
        utts += 1
    if frames == 0:
        raise Error(f"{feats_rspecifier}: no frames")
    kl = (ce - ent) / frames
    tp, sp = t.model.num_params, s.model.num_params
    return {"utterances": utts, "frames": frames, "top1_agreement": agree / frames,
            "kl": max(kl, 0.0), "cross_entropy": ce / frames, "teacher_entropy": ent / frames,
            "max_abs_diff": max_diff, "teacher_params": tp, "student_params": sp,
            "param_ratio": sp / tp if tp else None}


def format_compare(d: Dict[str, Any]) -> str:
    rows = [("utterances / frames", f"{d['utterances']} / {d['frames']}"),
            ("top-1 agreement", f"{d['top1_agreement']:.2%}"),
            ("KL(teacher || student)", f"{d['kl']:.5f} nats/frame"),
            ("cross-entropy", f"{d['cross_entropy']:.5f} (teacher entropy {d['teacher_entropy']:.5f})"),
            ("max |p_t - p_s|", f"{d['max_abs_diff']:.5f}"),
            ("parameters", f"{d['teacher_params']:,} -> {d['student_params']:,} "
                           f"({d['param_ratio']:.1%})" if d["param_ratio"] is not None else "-")]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)
