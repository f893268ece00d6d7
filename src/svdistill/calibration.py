"""Calibration statistics for data-aware compression.

One streaming forward pass of the input model over some features collects, in
the C++ core and in float64, the mean and covariance of each selected layer's
inputs. :func:`svdistill.compress` whitens each layer by them (SVD-LLM, Wang et
al. 2024): the rank-k pair it writes then minimises the layer's output error on
those inputs, each dropped singular value is exactly the output energy it costs,
and the bias keeps the layer's mean output. Under ``param_budget`` the layers are
compared by what their truncation costs at the model's output, as measured on
the first calibration frames (:func:`layer_losses`).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .errors import Error, option_error
from .model import Component, Model

#: Frames used by default: enough for a stable covariance of a 2048-dim input
#: (50 frames per dimension); the first frames of the table, in its order.
DEFAULT_FRAMES = 100_000
#: Frames (the first ones) on which the model's output loss is measured to put
#: layers on one scale under param_budget: a forward pass per selected layer.
PROBE_FRAMES = 4_000
#: The whitening's relative ridge (cpp/linalg/whiten.h); benchmarks/bench_calibration.py varies it.
_RIDGE = _core.WHITENING_RIDGE


@dataclass
class LayerStats:
    """The inputs of one selected layer over the calibration frames."""
    index: int               # component index in the model (1-based, as nnet-info)
    frames: int
    mean: np.ndarray         # float64 (in,)
    covariance: np.ndarray   # float64 (in x in), population covariance

    def whitening(self) -> "_core.Whitening":
        return _core.whitening(self.covariance, _RIDGE)

    def inputs(self) -> "_core.LayerInputs":
        """The statistics and their whitening as compress_layer takes them."""
        return _core.LayerInputs(self.mean, self.covariance, _RIDGE)


@dataclass
class Calibration:
    """What one calibration pass measured (see :func:`collect`)."""
    source: str
    frames: int
    utterances: int
    seconds: float
    layers: Dict[int, LayerStats]
    #: The first utterances' features (up to PROBE_FRAMES frames), for the
    #: output-loss measurements of param_budget.
    probe: List[np.ndarray] = field(default_factory=list, repr=False)
    feature_transform: Optional[Model] = field(default=None, repr=False)


def frames_option(value) -> int:
    """``calibration_frames``: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise option_error("calibration_frames", f"must be a positive integer, got {value!r}")
    return int(value)


def check_options(calibration, feature_transform, calibration_frames, **dependent) -> int:
    """The calibration keywords of compress() and spectrum(), checked once: without
    ``calibration`` the others (and each of ``dependent``'s that is set) would do nothing
    and are refused; with it, the checked number of frames."""
    if calibration is None:
        for name, given in (("feature_transform", feature_transform is not None),
                            ("calibration_frames", calibration_frames != DEFAULT_FRAMES),
                            *((k, bool(v)) for k, v in dependent.items())):
            if given:
                raise option_error(name, "applies to the {calibration} features, and none were given",
                                   others=["calibration"])
        return DEFAULT_FRAMES
    return frames_option(calibration_frames)


def collect(model: Model, feats, layers: Sequence[int], *, feature_transform=None,
            frames: int = DEFAULT_FRAMES, probe_frames: int = PROBE_FRAMES,
            progress: Optional[Callable[[int], None]] = None) -> Calibration:
    """Mean and covariance of the inputs of components ``layers`` (1-based) of
    ``model`` over the first ``frames`` frames of ``feats`` (an rspecifier, a dict
    of arrays or one array; the feature transform is run first, as nnet-forward).
    Memory: the model and one in x in float64 matrix per layer."""
    from .distill.data import Source  # (distill imports compress)
    if feature_transform is not None and not isinstance(feature_transform, Model):
        from .io import read
        feature_transform = read(feature_transform)
    src = Source(feats, "calibration", reread=False)
    name = src.name if src.name not in ("dict", "array") else "calibration " + src.name
    ft = list(feature_transform.components) if feature_transform is not None else []
    comps = list(model.components)
    if ft and comps and ft[-1].output_dim != comps[0].input_dim:
        raise Error(f"the feature transform outputs {ft[-1].output_dim} dims but the model expects "
                    f"{comps[0].input_dim}")
    positions = [len(ft) + i - 1 for i in sorted(layers)]
    try:
        cal = _core.Calibration([c._c for c in ft + comps], len(ft), positions)
    except _core.Error as e:
        raise Error(f"calibration: {e}") from None
    t0 = time.perf_counter()
    used = utts = 0
    probe: List[np.ndarray] = []
    probe_used = 0
    with contextlib.closing(iter(src)) as table:
        for key, mat in table:
            if used >= frames:
                break
            if mat.shape[1] != cal.input_dim:
                raise Error(f"{name}: utterance {key}: features have {mat.shape[1]} dims, the "
                            f"{'feature transform' if ft else 'model'} expects {cal.input_dim}")
            take = min(mat.shape[0], frames - used)
            cal.add(mat, take)
            if probe_used < probe_frames and take:
                probe.append(mat[:min(take, probe_frames - probe_used)])
                probe_used += len(probe[-1])
            used += take
            utts += 1
            if progress:
                progress(used)
    if utts == 0:
        raise Error(f"{name}: no utterances (an empty archive or scp): nothing to calibrate on")
    if used == 0:
        raise Error(f"{name}: no frames: {'its' if utts > 1 else 'the'} {utts} utterance"
                    f"{'s are all' if utts > 1 else ' is'} empty")
    stats = {}
    for pos, idx in enumerate(sorted(layers)):
        n, mean, cov = cal.stats(pos)
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise Error(f"{name}: the inputs of component {idx} are not finite: a component before it "
                        "produces NaN or inf on these features (a weight or bias with nan/inf?)")
        stats[idx] = LayerStats(index=idx, frames=int(n), mean=mean, covariance=cov)
    return Calibration(source=src.name, frames=used, utterances=utts, seconds=time.perf_counter() - t0,
                       layers=stats, probe=probe, feature_transform=feature_transform)


def _output_loss(blocks: Optional[List[int]], zt: np.ndarray, zs: np.ndarray) -> float:
    """Summed over frames: KL(teacher || student) per softmax block (logits in), or the
    squared output difference when the model does not end in a softmax."""
    if blocks is None:
        return float(np.square(zt.astype(np.float64) - zs).sum())
    return float(_core.compare_logits(zt, zs, blocks)["kl"])  # as `svdistill compare` counts it


def layer_losses(model: Model, cal: Calibration, trial: Dict[Tuple[int, int], List[Component]]
                 ) -> Dict[Tuple[int, int], float]:
    """The model's output loss per probe frame with one layer replaced: ``trial`` maps
    (layer index, tag) to the components replacing it."""
    comps = list(model.components)
    blocks: Optional[List[int]] = None
    upto = len(comps)
    if comps and comps[-1].kind == "Softmax":
        blocks, upto = [comps[-1].output_dim], upto - 1
    elif comps and comps[-1].kind == "BlockSoftmax":
        blocks, upto = [int(w) for w in comps[-1].ints], upto - 1  # type: ignore[union-attr]
    ft = list(cal.feature_transform.components) if cal.feature_transform is not None else []
    try:
        teacher = _core.Network([c._c for c in ft + comps[:upto]], len(ft))
    except _core.Error as e:
        raise option_error("param_budget", f"with {{calibration}} measures the model's output loss, so every "
                                           f"component must run: {e}", others=["calibration"]) from None
    reference = [teacher.forward(u) for u in cal.probe]
    frames = sum(len(u) for u in cal.probe)
    out = {}
    for (idx, tag), new in trial.items():
        cs = (comps[:idx - 1] + new + comps[idx:])[:upto + len(new) - 1]
        net = _core.Network([c._c for c in ft + cs], len(ft))
        out[(idx, tag)] = max(sum(_output_loss(blocks, z, net.forward(u))
                                  for z, u in zip(reference, cal.probe)) / frames, 0.0)
    return out


def refine(teacher: Model, student: List[Component], placed: Dict[int, Tuple[int, int]], cal: Calibration,
           feats, frames: int) -> Dict[int, float]:
    """``refine``: a closed-form least-squares update of each factored layer's out x k
    factor B and bias, so that the student's layer, on the student's own inputs, best
    reproduces the input model's layer output on its inputs:
    B = W C_tz (C_zz + ridge)^-1, b' = b + W mean_t - B mean_z, with x_t the input
    model's inputs of the layer and z = A x_s the student's first factor's outputs (their
    joint covariance in float64). Layer by layer from the input, one pass each (up to
    that layer), so each refit sees the inputs of the layers refitted before it: this
    corrects what the layers before have changed, which whitening alone cannot see.

    ``placed``: per layer index (1-based, the input model's), where its factors start in
    ``student`` and how many components they are. Updates ``student`` in place and
    returns per layer the relative output error after the update on those pairs."""
    from .distill.data import Source
    src = Source(feats, "calibration")  # read again: stdin is refused
    ft = list(cal.feature_transform.components) if cal.feature_transform is not None else []
    tc = list(teacher.components)
    errors = {}
    for i in sorted(placed):
        t_pos = len(ft) + i - 1
        last = placed[i][0] + placed[i][1] - 1  # the out x k factor
        s_pos = len(ft) + last
        tnet = _core.Network([c._c for c in ft + tc[:i]], len(ft))
        snet = _core.Network([c._c for c in ft + student[:last + 1]], len(ft))
        out_comp = student[last]
        W, b = tc[i - 1].weight, tc[i - 1].bias
        assert W is not None and b is not None
        d, k = W.shape[1], out_comp.input_dim
        m = _core.Moments(d + k)
        used = 0
        with contextlib.closing(iter(src)) as table:
            for _key, mat in table:
                if used >= frames:
                    break
                take = min(mat.shape[0], frames - used)
                if take:
                    x, = _core.component_inputs(tnet, mat, [t_pos])
                    z, = _core.component_inputs(snet, mat, [s_pos])
                    m.add(np.hstack([x[:take], z[:take]]))
                used += take
        C = m.covariance()
        mu = m.mean()
        Ctz, Czz = C[:d, d:], C[d:, d:]
        ridge = _RIDGE * max(float(np.trace(Czz)), 0.0) / k
        W64: np.ndarray = W.astype(np.float64)
        WCtz = W64 @ Ctz
        B = np.linalg.solve(Czz + ridge * np.eye(k), WCtz.T).T
        out_comp.weight = B.astype(np.float32)
        out_comp.bias = (b.astype(np.float64) + W64 @ mu[:d] - B @ mu[d:]).astype(np.float32)
        total = float(np.einsum("ij,jk,ik->", W64, C[:d, :d], W64))
        resid = total - 2 * float(np.sum(WCtz * B)) + float(np.einsum("ij,jk,ik->", B, Czz, B))
        errors[i] = float(np.sqrt(max(resid, 0.0) / total)) if total > 0 else 0.0
    return errors
