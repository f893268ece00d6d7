"""The PyTorch engine of :func:`svdistill.distill`: the same loss and update rules as
the C++ trainer, on the CPU or a CUDA device.

Student, teachers and feature transform are :func:`svdistill.torch.to_module`
modules on the device; an utterance's features cross to it once (from pinned
memory on CUDA, made by the reading thread) and the feature transform and
splicing run there; the randomizer shuffles on the device. Each minibatch runs
teachers and student in one step; statistics stay on the device and are read
back every ``check_every`` minibatches, so a GPU is not stalled per minibatch.

A logits teacher (:mod:`.engine`: an ensemble, ...) runs on the CPU: it is handed
the host copy of each minibatch, and its logits are moved to the device.
Hints match the student's activations to the teacher's as the core does:
the hint term's gradient with respect to each matched activation is written
directly (as the loss's with respect to the logits) and autograd takes both down.

Updates follow the core's rules exactly (not ``torch.optim``): Kaldi's SGD
(gradients summed over the minibatch, learn rate x the block's coefficient,
momentum, L2 scaled by the minibatch's frames, MaxNorm of affine rows) and
Adam (mean gradients, decoupled weight decay); which blocks train, with which
coefficients, is the core trainer's ``slots``.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, List, Optional, Sequence, Tuple, cast

import numpy as np

from ..errors import Error, option_error
from ..model import Component, Model
from .engine import (
    STAT_KEYS,
    Teacher,
    TrainOptions,
    as_written,
    core_trainer,
    first_nonfinite_row,
    is_logits_teacher,
    logits_of,
    stage_names,
)

#: The floor of a hint layer's variance: as the core's (kHintVarianceFloor, nn/loss.cc).
HINT_VARIANCE_FLOOR = 1e-4


def _import_torch():
    try:
        import torch
    except ImportError:
        raise Error("--engine torch needs PyTorch: pip install torch (or 'svdistill[torch]')") from None
    return torch


def resolve_device(device: Optional[str]) -> str:
    """'cpu', 'cuda' or 'cuda:N', checked against what this machine has."""
    torch = _import_torch()
    name = device or "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise option_error("device", f"must be cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise option_error("device", f"must be cpu, cuda or cuda:N, got {name!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise option_error("device", f"{name}: PyTorch sees no CUDA device (torch {torch.__version__}"
                               f"{', a CPU-only build' if torch.version.cuda is None else ''})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise option_error("device", f"{name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return str(dev)


class TorchEngine:
    name = "torch"

    def __init__(self, comps: List[Component], teachers: Sequence[Teacher], feature_transform: Optional[Model],
                 opts: TrainOptions, *, hints: Sequence[Tuple[int, int]] = (), device: Optional[str] = None,
                 precision: str = "fp32", dist=None) -> None:
        torch = _import_torch()
        from ..torch import _Layer, _named_params, to_module
        self.torch = torch
        self.dist = dist
        self.world = dist.world if dist is not None else 1
        self.device = resolve_device(dist.device(device) if dist is not None else device)
        self.cuda = self.device.startswith("cuda")
        if precision != "fp32" and not self.cuda:  # the values are checked by distill()
            raise option_error("precision", f"{precision} needs a CUDA device: on the CPU the torch engine "
                               "trains in fp32")
        self.precision = precision
        self.check_every = 16 if self.cuda else 1
        self._thread = threading.local()
        self.comps = comps
        self.opts = opts
        # The core's trainer checks the student and teachers (same refusals, same words as
        # the core engine) and says which parameter blocks train.
        slots = core_trainer(comps, teachers, hints).slots
        dev = torch.device(self.device)
        self.student = to_module(Model(comps)).to(dev)
        self.external = teachers[0] if len(teachers) == 1 and is_logits_teacher(teachers[0]) else None
        self.teacher_list = list(teachers)
        self.teachers = [to_module(t).to(dev).eval() for t in teachers if not is_logits_teacher(t)]
        self.hints = [(int(a), int(b)) for a, b in hints]
        for t in self.teachers:
            t.requires_grad_(False)
        self.ft = to_module(feature_transform).to(dev).eval() if feature_transform is not None else None
        if self.ft is not None:
            self.ft.requires_grad_(False)
        self.student.requires_grad_(False)
        self.slots = []
        for s in slots:
            p = list(_named_params(cast(_Layer, self.student.layers[s["component"]])))[s["param"]][1]
            p.requires_grad_(True)
            self.slots.append((p, s))
        self.params = [p for p, _ in self.slots]
        self.by_coef: List[Tuple[float, List[int]]] = []  # (coefficient, slot indices)
        for i, (_, sl) in enumerate(self.slots):
            for coef, idx in self.by_coef:
                if coef == sl["coef"]:
                    idx.append(i)
                    break
            else:
                self.by_coef.append((sl["coef"], [i]))
        last = comps[-1]
        self.blocks = ([int(b) for b in last.ints]  # type: ignore[union-attr]  # BlockSoftmax: ints
                       if last.kind == "BlockSoftmax" else [last.output_dim])
        self._tf32_was = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        if precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.reset_optimizer()

    def close(self) -> None:
        """Puts back the process-wide matmul settings --precision tf32 changed."""
        self.torch.backends.cuda.matmul.allow_tf32, self.torch.backends.cudnn.allow_tf32 = self._tf32_was

    # -- arrays --------------------------------------------------------------
    def host(self, raw: np.ndarray) -> Any:
        a = np.ascontiguousarray(raw, dtype=np.float32)
        if not a.flags.writeable:  # e.g. a view of kaldiio's read buffer; torch wants to own writable memory
            a = a.copy()
        t = self.torch.from_numpy(a)
        if not self.cuda:
            return t
        if not getattr(self._thread, "device_set", False):
            # Pinning needs a CUDA context on the reading thread: this rank's device, not device 0
            # (as PyTorch's own DataLoader pin-memory thread does).
            self.torch.cuda.set_device(self.torch.device(self.device))
            self._thread.device_set = True
        return t.pin_memory()

    def prepare(self, host: Any) -> Any:
        x = host.to(self.device, non_blocking=True)
        if self.ft is not None:
            with self.torch.no_grad():
                x = self.ft(x)
        return x

    def concat(self, xs: List[Any]) -> Any:
        return self.torch.cat(xs) if len(xs) > 1 else xs[0]

    def take(self, x: Any, perm: np.ndarray) -> Any:
        return x.index_select(0, self.torch.from_numpy(perm).to(self.device, non_blocking=True))

    @staticmethod
    def length(x: Any) -> int:
        return int(x.shape[0])

    def labels(self, y: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(self.device, non_blocking=True)

    # -- the loss --------------------------------------------------------------
    def _autocast(self):
        if self.precision == "bf16":
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _run(module: Any, x: Any, keep: Sequence[int]) -> Tuple[Any, dict]:
        """``module``'s logits of ``x`` and the outputs of its layers ``keep`` (by index)."""
        acts = {}
        for i, layer in enumerate(module.layers[:-1]):
            x = layer(x)
            if i in keep:
                acts[i] = x
        return x, acts

    def _stats(self, x: Any, y: Optional[Any], want_grad: bool, want_kl1: bool):
        """(statistics as a float64 tensor in STAT_KEYS order, the student's tensors to
        differentiate (its logits, then the hinted activations when the hint term has a
        weight), and the gradient of the summed objective with respect to each, or None).

        As in the core, the loss is not differentiated by autograd: its gradient with
        respect to the logits is (1 - a) T (p_T - q_T) + a (p_1 - onehot(label)), and the
        hint term's with respect to an activation 2 B (s - t) / (units v), written
        directly; autograd takes them down. Per minibatch the sums are float32 (at most a
        few thousand frames; the hint term's float64), made into one float64 vector at the end.
        """
        torch = self.torch
        o = self.opts.loss
        acts: dict = {}
        tacts: dict = {}
        with self._autocast():
            if self.hints:
                logits, acts = self._run(self.student, x, [a for a, _ in self.hints])
                with torch.no_grad():
                    tlog, tacts = self._run(self.teachers[0], x, [b for _, b in self.hints])
                tz = [tlog]
            else:
                logits = self.student.logits(x)
                with torch.no_grad():
                    tz = [t.logits(x) for t in self.teachers]
        if self.external is not None:  # on the CPU, from the host copy of the minibatch
            host = x.detach().float().cpu().numpy()
            tz = [torch.from_numpy(logits_of(self.external, host)).to(self.device, non_blocking=True)]
        soft = bool(tz)
        temp = as_written(o.temperature)
        a = as_written(o.hard_weight) if soft else 1.0
        hard = y is not None and a > 0
        f32 = torch.float32
        objective: List[Any] = []
        kl_t: List[Any] = []
        kl1: List[Any] = []
        hard_ce: List[Any] = []
        agree: List[Any] = []
        correct: List[Any] = []
        mix = len(tz) > 1 and o.average_logits
        with torch.no_grad():
            z = logits.detach().float()
            tz = [t.float() for t in tz]
            frames = z.shape[0]
            grads: List[Any] = []
            c0 = 0
            for w in self.blocks:
                zb = z[:, c0:c0 + w]
                smax = zb.argmax(dim=1)
                log_p1 = None
                g = None
                if soft:
                    tb = [t[:, c0:c0 + w] for t in tz]
                    q = self._targets(tb, temp, mix)
                    log_p = torch.log_softmax(zb / temp, dim=1)
                    kl = (torch.special.xlogy(q, q) - q * log_p).sum(dim=1).clamp_min(0).sum()  # KL(q || p_T)
                    kl_t.append(kl)
                    objective.append((1 - a) * temp * temp * kl)
                    if want_grad:
                        g = log_p.exp_().sub_(q).mul_((1 - a) * temp)
                    if want_kl1:  # evaluation: against the T = 1 targets, as the core (nn/stats) and compare
                        q1 = q if temp == 1 else self._targets(tb, 1.0, mix)
                        log_p1 = torch.log_softmax(zb, dim=1)
                        kl1.append((torch.special.xlogy(q1, q1) - q1 * log_p1).sum(dim=1).clamp_min(0).sum())
                        agree.append((q1.argmax(dim=1) == smax).sum(dtype=f32))
                    else:
                        agree.append((q.argmax(dim=1) == smax).sum(dtype=f32))
                if y is not None:
                    inside = (y >= c0) & (y < c0 + w)
                    lab = (y - c0).clamp(0, w - 1)
                    if log_p1 is None:
                        log_p1 = torch.log_softmax(zb, dim=1)
                    ce = torch.where(inside, -log_p1.gather(1, lab.unsqueeze(1)).squeeze(1), 0.0).sum()
                    hard_ce.append(ce)
                    correct.append(((smax == lab) & inside).sum(dtype=f32))
                    if hard:
                        objective.append(a * ce)
                        if want_grad:
                            weight = inside.to(f32).mul_(a).unsqueeze(1)  # a on labelled frames of this block
                            gh = log_p1.exp().mul_(weight)
                            gh.scatter_add_(1, lab.unsqueeze(1), -weight)
                            g = gh if g is None else g.add_(gh)
                if want_grad:
                    grads.append(g if g is not None else torch.zeros_like(zb))
                c0 += w
            zero = z.new_zeros(())

            def total(parts: List[Any]) -> Any:
                return zero if not parts else parts[0] if len(parts) == 1 else torch.stack(parts).sum()

            labelled = (y >= 0).sum(dtype=f32) if y is not None else zero
            n_blocks = frames * len(self.blocks) if soft else 0
            outs, gouts = [logits], None
            hint = zero.double()
            if self.hints:
                weight = as_written(o.hint_weight)
                gh = []
                for si, ti in self.hints:
                    sa, ta = acts[si].detach().float(), tacts[ti].float()
                    v = ta.double().var(dim=0, correction=0).mean().clamp_min(HINT_VARIANCE_FLOOR)
                    inv = 1.0 / (sa.shape[1] * v)
                    diff = sa - ta
                    hint = hint + diff.double().square().sum() * inv
                    if want_grad and weight > 0 and acts[si].requires_grad:
                        outs.append(acts[si])
                        gh.append(diff.mul_((2.0 * weight * inv).float()).to(acts[si].dtype))
                if weight > 0:
                    objective.append((weight * hint).float())
            stats = torch.cat([torch.stack([zero + frames, total(objective), total(kl_t), total(kl1),
                                            total(hard_ce), total(agree), zero + n_blocks, total(correct),
                                            labelled]).double(), hint.reshape(1)])
            if want_grad:
                gouts = [(grads[0] if len(grads) == 1 else torch.cat(grads, dim=1)).to(logits.dtype)]
                if self.hints:
                    gouts += gh
        return stats, outs, gouts

    def _targets(self, tb: List[Any], temp: float, mix: bool) -> Any:
        torch = self.torch
        if mix:
            return torch.softmax(torch.stack(tb).mean(dim=0) / temp, dim=1)
        q = torch.softmax(tb[0] / temp, dim=1)
        for t in tb[1:]:
            q = q + torch.softmax(t / temp, dim=1)
        return q / len(tb) if len(tb) > 1 else q

    # -- minibatches ---------------------------------------------------------
    def train(self, x: Any, y: Optional[Any], learn_rate: float) -> Any:
        torch = self.torch
        stats, outs, gouts = self._stats(x, y, want_grad=bool(self.slots), want_kl1=False)
        grads = torch.autograd.grad(outs, self.params, grad_outputs=gouts) if self.slots else ()
        frames = int(x.shape[0])
        if self.dist is not None:
            grads, stats, frames, _ = self._combine(grads, stats.detach(), have_data=True)
        if self.slots:
            self._update(grads, frames, float(learn_rate))
        return stats.detach()

    def _combine(self, grads, stats, have_data: bool):
        """Sums gradients and statistics over the ranks: (grads, stats, frames, ranks with data)."""
        torch = self.torch
        flat = torch.cat([g.reshape(-1) for g in grads]) if grads else None
        if flat is not None:
            self.dist.all_reduce(flat)
        meta = torch.cat([stats, torch.ones(1, dtype=torch.float64, device=stats.device) * float(have_data)])
        self.dist.all_reduce(meta)
        stats, ranks = meta[:-1], meta[-1]
        out, k = [], 0
        for g in grads:
            assert flat is not None  # grads is not empty
            out.append(flat[k:k + g.numel()].view_as(g))
            k += g.numel()
        # The frame count enters the update (L2, Adam's mean) as a tensor: no read-back per step.
        return out, stats, stats[0].float(), ranks

    def steps(self, batches, learn_rate: float, skip: int = 0):
        from .engine import local_steps
        if self.dist is None:
            yield from local_steps(self, batches, learn_rate, skip)
            return
        b = -1
        for b, (x, y, frames) in enumerate(batches):
            if b >= skip:
                yield b, self.train(x, y, learn_rate), frames
        # This rank's shard is done: zero gradients, the others' update, until every rank is done.
        b = max(b + 1, skip)
        torch = self.torch
        while True:
            zeros = [torch.zeros_like(p) for p in self.params]
            grads, stats, frames, ranks = self._combine(zeros, self.zero_stats(), have_data=False)
            if ranks.item() == 0:
                return
            if self.slots:
                self._update(grads, frames, float(learn_rate))
            yield b, stats, 0
            b += 1

    def reduce(self, total: Any) -> Any:
        if self.dist is not None:
            self.dist.all_reduce(total)
        return total

    def evaluate(self, x: Any, y: Optional[Any]) -> Any:
        with self.torch.no_grad():
            return self._stats(x, y, want_grad=False, want_kl1=True)[0]

    def _update(self, grads, frames, lr: float) -> None:
        """``frames``: the minibatch's frames over all ranks (an int, or a 0-dim tensor)."""
        torch = self.torch
        o = self.opts.optimizer
        momentum, l2 = as_written(o.momentum), as_written(o.l2_penalty)
        with torch.no_grad():
            if not o.adam:
                # Kaldi's SGD: acc = momentum x acc + grad (momentum only where Kaldi applies it;
                # a fresh accumulator is the gradient), w = w x (1 - rate x l2 x frames) - rate x acc.
                steps = []
                for i, ((p, s), g) in enumerate(zip(self.slots, grads)):
                    acc = self.acc[i]
                    if acc is not None and s["momentum"] and momentum != 0:
                        acc.mul_(momentum).add_(g)
                    else:
                        acc = g  # autograd's (or the all-reduce's) fresh tensor: no copy needed
                    self.acc[i] = acc
                    steps.append(acc)
                    if s["decay"] and l2 != 0:
                        p.mul_(1.0 - lr * s["coef"] * l2 * frames)
                for coef, idx in self.by_coef:  # one fused call per learn-rate coefficient, no temporaries
                    torch._foreach_add_([self.params[i] for i in idx], [steps[i] for i in idx], alpha=-lr * coef)
            else:
                self.step += 1
                beta1, beta2, eps = as_written(o.beta1), as_written(o.beta2), as_written(o.epsilon)
                c1 = 1.0 / (1.0 - beta1 ** self.step)
                c2 = 1.0 / (1.0 - beta2 ** self.step)
                for i, ((p, s), g) in enumerate(zip(self.slots, grads)):
                    rate = lr * s["coef"]
                    if self.acc[i] is None:
                        self.acc[i] = torch.zeros_like(p)
                        self.sq[i] = torch.zeros_like(p)
                    gm = g / frames
                    m, v = self.acc[i], self.sq[i]
                    m.mul_(beta1).add_(gm, alpha=1.0 - beta1)
                    v.mul_(beta2).addcmul_(gm, gm, value=1.0 - beta2)
                    if s["decay"] and l2 != 0:
                        p.mul_(1.0 - rate * l2)
                    p.sub_(rate * (m * c1) / ((v * c2).sqrt() + eps))
            for p, s in self.slots:
                if s["max_norm"] > 0 and p.dim() == 2:  # Kaldi's MaxNorm: rows onto the sphere
                    norms = p.norm(dim=1, keepdim=True)
                    p.mul_(torch.where(norms > s["max_norm"], s["max_norm"] / norms, 1.0))

    # -- statistics ----------------------------------------------------------
    def zero_stats(self) -> Any:
        return self.torch.zeros(len(STAT_KEYS), dtype=self.torch.float64, device=self.device)

    @staticmethod
    def add(total: Any, s: Any) -> None:
        total.add_(s)

    @staticmethod
    def read(total: Any) -> dict:
        values = total.tolist()
        return {k: (int(round(v)) if k in ("frames", "agree", "blocks", "correct", "labelled") else v)
                for k, v in zip(STAT_KEYS, values)}

    def objectives(self, stats: Sequence[Any]) -> List[float]:
        if not stats:
            return []
        s = self.torch.stack(list(stats)).tolist()
        return [r[1] / max(r[0], 1) for r in s]

    # -- state ---------------------------------------------------------------
    def snapshot(self) -> List[Any]:
        return [p.detach().clone() for p in self.student.parameters()]

    def restore(self, snap: List[Any]) -> None:
        with self.torch.no_grad():
            for p, v in zip(self.student.parameters(), snap):
                p.copy_(v)

    def reset_optimizer(self) -> None:
        self.acc: List[Any] = [None] * len(self.slots)
        self.sq: List[Any] = [None] * len(self.slots)
        self.step = 0

    def first_nonfinite(self, host: Any, n: int, rows: slice):
        """As the core engine's: (stage, frame, value) of the first non-finite value, or None."""
        torch = self.torch
        x: List[Any] = []

        def numpy(t: Any) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        def student_in() -> np.ndarray:
            x.append(self.prepare(host)[:n][rows])
            return numpy(x[0])

        stages = [("the features are", 0, lambda: numpy(host[:n]))]
        stages.append(("the feature transform outputs" if self.ft is not None else "the features are",
                       rows.start, student_in))
        with torch.no_grad(), self._autocast():
            # The networks' outputs (softmax included), as the core engine checks them: the same values.
            names = stage_names(self.teacher_list)
            if self.external is not None:
                stages.append((names[0], rows.start, lambda: logits_of(self.external, numpy(x[0]))))
            else:
                stages += [(name, rows.start, lambda t=t: numpy(t(x[0])))  # type: ignore[misc]
                           for name, t in zip(names, self.teachers)]
            stages.append(("the student outputs", rows.start, lambda: numpy(self.student(x[0]))))
            return first_nonfinite_row(stages)

    # -- checkpoints ---------------------------------------------------------
    def state_arrays(self, best: List[Any]) -> dict:
        out = {}
        for j, (p, b) in enumerate(zip(self.student.parameters(), best)):
            out[f"cur/{j}"] = p.detach().cpu().numpy()
            out[f"best/{j}"] = b.cpu().numpy()
        for k, (a, v) in enumerate(zip(self.acc, self.sq)):
            if a is not None:
                out[f"m1/{k}"] = a.cpu().numpy()
            if v is not None:
                out[f"m2/{k}"] = v.cpu().numpy()
        out["adam_step"] = np.array(self.step, np.int64)
        return out

    def load_state_arrays(self, arrays: dict) -> List[Any]:
        torch = self.torch
        best = []
        with torch.no_grad():
            for j, p in enumerate(self.student.parameters()):
                cur, b = arrays[f"cur/{j}"], arrays[f"best/{j}"]
                if tuple(cur.shape) != tuple(p.shape) or tuple(b.shape) != tuple(p.shape):
                    raise KeyError(f"cur/{j}")
                p.copy_(torch.from_numpy(np.array(cur, dtype=np.float32)))
                best.append(torch.from_numpy(np.array(b, dtype=np.float32)).to(self.device))
        self.reset_optimizer()
        for k, (p, _) in enumerate(self.slots):
            for key, dst in ((f"m1/{k}", self.acc), (f"m2/{k}", self.sq)):
                if key in arrays:
                    if tuple(arrays[key].shape) != tuple(p.shape):
                        raise KeyError(key)
                    dst[k] = torch.from_numpy(np.array(arrays[key], dtype=np.float32)).to(self.device)
        self.step = int(arrays["adam_step"])
        return best

    def result(self) -> List[Component]:
        from ..torch import update_model
        update_model(Model(self.comps), self.student)
        return self.comps
