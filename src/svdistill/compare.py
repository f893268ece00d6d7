"""How close a student is to its teacher on real features: the fidelity check."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core
from .archive import check_finite
from .errors import Error
from .forward import EnsembleLike, ModelLike, Network, _ensemble_runner, _load

FeatsLike = Union[str, Mapping[str, np.ndarray], np.ndarray]


def _logit_network(model: ModelLike, feature_transform: Optional[ModelLike], who: str
                   ) -> Tuple[Network, List[int]]:
    """The model without its softmax (logits), and the widths of the distributions it
    outputs: [D] for a <Softmax>, the block dims of a <BlockSoftmax>. Other outputs are
    not distributions: refused."""
    m = _load(model)
    last = m.components[-1] if len(m.components) else None
    if last is None or last.kind not in ("Softmax", "BlockSoftmax"):
        Network(m, feature_transform=feature_transform)  # an unsupported component is named first
        raise Error(f"the {who} ends in {last.marker if last is not None else 'nothing (an empty model)'}, "
                    "not a <Softmax> or <BlockSoftmax>: compare needs posteriors")
    blocks = [last.output_dim] if last.kind == "Softmax" else [int(w) for w in last.ints]  # type: ignore[union-attr]  # BlockSoftmax: ints
    return Network(m, feature_transform=feature_transform, no_softmax=True), blocks


def compare(teacher: Optional[ModelLike], student: ModelLike, feats: FeatsLike, *,
            feature_transform: Optional[ModelLike] = None, teacher_ensemble: Optional[EnsembleLike] = None,
            top_n: Optional[int] = None, tolerance: Optional[float] = None,
            max_iterations: Optional[int] = None) -> Dict[str, Any]:
    """Teacher-vs-student statistics over every frame of the features.

    Parameters
    ----------
    teacher, student : Model or path
        Both end in a ``<Softmax>`` or the same ``<BlockSoftmax>`` blocks.
    feats : rspecifier, dict or array
        As :func:`svdistill.distill` takes them: a Kaldi rspecifier (``ark:``,
        ``scp:``, ``ark:COMMAND |``, ``ark:-``), a dict {key: frames x dims array}
        or one 2-D array. Features with NaN/inf are an error naming the utterance
        and frame; so are non-finite outputs of either model.
    feature_transform : Model or path, optional
        Run first for both models. With ``teacher_ensemble``: the student's, by default
        the ensemble's own; another one is refused (both see the same features).
    teacher_ensemble : path of an ensemble.json, or a loaded :class:`~svdistill.specialists.Ensemble`
        The teacher in place of ``teacher`` (then None): its combined posteriors q
        (section 5.3 of Hinton et al. 2015), whose logits are log q, so that every
        statistic below compares q with the student's posteriors.
        ``teacher_params`` counts the generalist and every specialist.
    top_n, tolerance, max_iterations
        The combination's, as :func:`svdistill.forward.forward_archive` takes them
        (only with ``teacher_ensemble``).

    Returns
    -------
    dict
        ``frames``, ``utterances``; ``top1_agreement``: the fraction of (frame,
        softmax block) pairs where the teacher's and the student's arg-max agree --
        each block of a ``<BlockSoftmax>`` is its own distribution, so it is compared
        on its own (a plain ``<Softmax>`` is one block); ``kl``: mean KL(teacher ||
        student) per frame, nats, the sum of the blocks' KLs; ``cross_entropy`` (mean
        -sum p_teacher log p_student) and ``teacher_entropy``, summed over blocks the
        same way; ``max_abs_diff`` (largest |p_teacher - p_student|); ``teacher_params``,
        ``student_params`` and ``param_ratio``. Agreement and KL are defined as
        ``distill`` reports them (its ``cv_agreement`` and ``cv_kl``).
    """
    from .distill.data import Source  # (distill imports this package's forward module)
    src = Source(feats, "features", reread=False)
    ensemble = _ensemble_runner(teacher, teacher_ensemble, top_n, tolerance, max_iterations, "teacher",
                                "teacher_ensemble")
    t: Any
    if ensemble is not None:
        ens = ensemble.ensemble
        feature_transform = ens.feature_transform_for(None if feature_transform is None else _load(feature_transform),
                                                      "teacher_ensemble")
        # Its logits are log q: the core's log-softmax of them is log q again (q sums to 1), so
        # the teacher's distribution is the combination's (zeros of q floored as Ensemble.logits says).
        t, blocks = (lambda x: ensemble.logits(x, raw=True)), [ens.num_classes]
        t_in, t_out, teacher_name = ens.input_dim, ens.num_classes, "teacher ensemble"
        tp = sum(m.num_params for m in [ens.generalist, *ens.specialists])
    else:
        # Logits (the softmax left out): the core takes exact log-softmaxes per block from them
        # (no floor under tiny probabilities).
        t, blocks = _logit_network(teacher, feature_transform, "teacher")  # type: ignore[arg-type]
        t_in, t_out, teacher_name, tp = t.input_dim, t.output_dim, "teacher", t.model.num_params
    s, s_blocks = _logit_network(student, feature_transform, "student")
    if t_out != s.output_dim:
        raise Error(f"{teacher_name} outputs {t_out} dims, student {s.output_dim}")
    if t_in != s.input_dim:
        raise Error(f"{teacher_name} expects {t_in} input dims, student {s.input_dim}")
    if s_blocks != blocks:
        raise Error(f"the teacher's softmax blocks {blocks} differ from the student's {s_blocks}: their "
                    "outputs are not the same distributions")
    frames = utts = 0
    total: Dict[str, float] = {}
    name = src.name if src.name not in ("dict", "array") else src.what
    with contextlib.closing(iter(src)) as table:
        for key, mat in table:
            if mat.shape[1] != t_in:
                raise Error(f"{name}: utterance {key}: features have {mat.shape[1]} dims, the networks expect "
                            f"{t_in}")
            zt = t(mat)
            zs = s(mat)
            for out, who in ((zt, "teacher"), (zs, "student")):
                check_finite(out, f"{name}: utterance {key}", f"{who}'s output",
                             f"its features are finite: the {who} itself produces NaN or inf")
            # Per softmax block, in double, in the core: as distill's CV columns (nn/stats).
            st = _core.compare_logits(zt, zs, blocks)
            for k in ("agree", "kl", "cross_entropy", "teacher_entropy"):
                total[k] = total.get(k, 0.0) + float(st[k])
            total["max_abs_diff"] = max(total.get("max_abs_diff", 0.0), st["max_abs_diff"])
            frames += mat.shape[0]
            utts += 1
    if utts == 0:
        raise Error(f"{name}: no utterances (an empty archive or scp): nothing to compare")
    if frames == 0:
        raise Error(f"{name}: no frames: its {utts} utterance{'s' if utts > 1 else ''} are all empty")
    agree, kl, ce, ent = total["agree"], total["kl"], total["cross_entropy"], total["teacher_entropy"]
    max_diff = total["max_abs_diff"]
    if ensemble is not None:
        ensemble.warn_unconverged()
    sp = s.model.num_params
    return {"utterances": utts, "frames": frames, "top1_agreement": int(agree) / (frames * len(blocks)),
            "kl": kl / frames, "cross_entropy": ce / frames, "teacher_entropy": ent / frames,
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
