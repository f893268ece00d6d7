"""nnet1 models as PyTorch modules, and trained parameters back into nnet1 models.

``to_module(model)`` builds a ``torch.nn.Module`` that computes what
``svdistill forward`` (Kaldi's ``nnet-forward``) computes, for every component
kind forward runs; ``update_model(model, module)`` writes the module's
parameters back into the model, keeping its structure and its coefficients
(``<LearnRateCoef>``, ``<BiasLearnRateCoef>``, ``<MaxNorm>``, ...).

The module takes the frames of one utterance, a (frames x dims) tensor: a
``<Splice>`` reads neighbouring frames, repeating the first and last frame at
the utterance's edges as Kaldi does. Without Splice, any set of frames can be
stacked into one batch.

PyTorch is imported when this module is, so ``import svdistill`` works without
it: install the extra (``pip install 'svdistill[torch]'``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union, cast

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as _e:  # pragma: no cover - exercised only without torch
    from .errors import Error as _Error
    raise _Error("svdistill.torch needs PyTorch: pip install torch (or 'svdistill[torch]')") from _e

from .errors import Error
from .forward import ModelLike, _load
from .model import Component, Model

__all__ = ["ForwardModule", "NnetModule", "SUPPORTED_KINDS", "forward_module", "to_module", "update_model"]


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


class _Layer(nn.Module):
    """One nnet1 component. ``kind`` and ``marker`` as in :class:`svdistill.Component`;
    ``coefs`` its scalar attributes (learn-rate coefficients, MaxNorm, ...)."""

    def __init__(self, comp: Component) -> None:
        super().__init__()
        self.kind = comp.kind
        self.marker = comp.marker
        self.input_dim = comp.input_dim
        self.output_dim = comp.output_dim
        self.coefs = comp.coefs

    def extra_repr(self) -> str:
        return f"{self.marker} {self.input_dim} -> {self.output_dim}"


class Affine(_Layer):
    """<AffineTransform> (y = x W^T + b) and <LinearTransform> (no bias)."""

    def __init__(self, comp: Component) -> None:
        super().__init__(comp)
        weight = comp.weight
        assert weight is not None  # both kinds have one
        self.weight = nn.Parameter(_tensor(weight))
        self.bias = (nn.Parameter(_tensor(comp.bias))  # type: ignore[arg-type]  # an AffineTransform has one
                     if comp.kind == "AffineTransform" else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class Elementwise(_Layer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == "Sigmoid":
            return torch.sigmoid(x)
        if k == "Tanh":
            return torch.tanh(x)
        if k == "Relu":
            return torch.relu(x)
        if k in ("Softmax", "HiddenSoftmax"):
            return torch.softmax(x, dim=-1)
        return x  # Dropout (nnet-forward disables it; training too), PDNN <linear>


class BlockSoftmax(_Layer):
    def __init__(self, comp: Component) -> None:
        super().__init__(comp)
        self.blocks = [int(d) for d in comp.ints]  # type: ignore[union-attr]  # BlockSoftmax: ints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.softmax(b, dim=-1) for b in torch.split(x, self.blocks, dim=-1)], dim=-1)


class ParametricRelu(_Layer):
    """y = alpha x for x >= 0, beta x otherwise (per dimension)."""

    def __init__(self, comp: Component) -> None:
        super().__init__(comp)
        self.alpha = nn.Parameter(_tensor(comp.params["alpha"]))
        self.beta = nn.Parameter(_tensor(comp.params["beta"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, self.alpha * x, self.beta * x)


class Shift(_Layer):
    """<AddShift> (x + shift) and <Rescale> (x * scale)."""

    def __init__(self, comp: Component) -> None:
        super().__init__(comp)
        name = "shift_data" if comp.kind == "AddShift" else "scale_data"
        self.param_name = name
        self.data = nn.Parameter(_tensor(comp.params[name]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.data if self.kind == "AddShift" else x * self.data


class LengthNorm(_Layer):
    """Each frame divided by its L2 norm (no floor, as Kaldi)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True))


class Splice(_Layer):
    """Frames t + o for each offset o, side by side; indices clamped to the utterance."""

    offsets: torch.Tensor  # a buffer

    def __init__(self, comp: Component) -> None:
        super().__init__(comp)
        self.register_buffer("offsets", torch.tensor([int(o) for o in comp.ints],  # type: ignore[union-attr]
                                                      dtype=torch.int64),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        idx = torch.arange(t, device=x.device).unsqueeze(1) + self.offsets.unsqueeze(0)
        idx = idx.clamp(0, t - 1)
        return x[idx.reshape(-1)].reshape(t, -1)


class Copy(_Layer):
    """Output j is input ints[j] (1-based, as in the file)."""

    index: torch.Tensor  # a buffer

    def __init__(self, comp: Component) -> None:
        super().__init__(comp)
        self.register_buffer("index", torch.tensor([int(i) - 1 for i in comp.ints],  # type: ignore[union-attr]
                                                    dtype=torch.int64),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index)


_LAYERS = {
    "AffineTransform": Affine, "LinearTransform": Affine,
    "Sigmoid": Elementwise, "Tanh": Elementwise, "Relu": Elementwise, "Softmax": Elementwise,
    "HiddenSoftmax": Elementwise, "Dropout": Elementwise, "Linear": Elementwise,
    "BlockSoftmax": BlockSoftmax, "ParametricRelu": ParametricRelu,
    "AddShift": Shift, "Rescale": Shift, "LengthNormComponent": LengthNorm,
    "Splice": Splice, "Copy": Copy,
}

#: The component kinds a module can hold: those ``svdistill forward`` runs.
SUPPORTED_KINDS = tuple(_LAYERS)


def _layer(comp: Component, where: str) -> _Layer:
    cls = _LAYERS.get(comp.kind)
    if cls is None:
        raise Error(f"{where} {comp.marker}: svdistill.torch cannot run {comp.kind} components "
                    f"(it runs {', '.join(SUPPORTED_KINDS)})")
    return cls(comp)


def _layers(model: Model, what: str) -> List[_Layer]:
    """The layers of ``model``; ``what`` ("component" or "feature transform component")
    names them in errors."""
    out: List[_Layer] = []
    for i, c in enumerate(model.components):
        if out and out[-1].output_dim != c.input_dim:
            raise Error(f"{what} {i + 1} {c.marker}: input dim {c.input_dim} does not match "
                        f"the previous output dim {out[-1].output_dim}")
        out.append(_layer(c, f"{what} {i + 1}"))
    return out


class NnetModule(nn.Module):
    """An nnet1 model (and optionally its feature transform) as a module.

    ``layers[i]`` is the model's component i; ``transform`` the feature
    transform's layers, frozen (its parameters do not require gradients).
    ``forward(x, upto=None)`` runs the transform, then the first ``upto`` layers
    (all by default); ``logits(x)`` stops before a final softmax.
    """

    def __init__(self, layers: Sequence[_Layer], transform: Sequence[_Layer] = ()) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.transform = nn.ModuleList(transform)
        for p in self.transform.parameters():
            p.requires_grad_(False)
        if transform and layers and transform[-1].output_dim != layers[0].input_dim:
            raise Error(f"the feature transform outputs {transform[-1].output_dim} dims but the model "
                        f"expects {layers[0].input_dim}")

    @property
    def input_dim(self) -> int:
        first = cast(_Layer, self.transform[0] if len(self.transform) else self.layers[0])
        return first.input_dim

    @property
    def output_dim(self) -> int:
        return cast(_Layer, self.layers[-1]).output_dim

    @property
    def ends_in_softmax(self) -> bool:
        return len(self.layers) > 0 and self.layers[-1].kind in ("Softmax", "BlockSoftmax")

    def forward(self, x: torch.Tensor, upto: Optional[int] = None) -> torch.Tensor:
        for layer in self.transform:
            x = layer(x)
        for layer in self.layers[:upto]:
            x = layer(x)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The input of a final softmax (the whole output when there is none)."""
        return self.forward(x, len(self.layers) - 1 if self.ends_in_softmax else None)


def to_module(model: ModelLike, feature_transform: Optional[ModelLike] = None) -> NnetModule:
    """``model`` (a :class:`svdistill.Model` or a path) as a float32 :class:`NnetModule` on the CPU.

    Parameters are copied: training the module leaves ``model`` as it is until
    :func:`update_model` writes them back. Kinds ``svdistill forward`` cannot
    run (LSTM, convolution, ...) are an error naming the component.
    """
    m = _load(model)
    if not m.components:
        raise Error("the model has no components")
    ft = _load(feature_transform) if feature_transform is not None else None
    transform = _layers(ft, "feature transform component") if ft is not None else ()
    return NnetModule(_layers(m, "component"), transform)


def update_model(model: Model, module: NnetModule) -> Model:
    """Write ``module``'s parameters into ``model`` (in place) and return it.

    ``module`` must have been made from a model of the same structure
    (:func:`to_module`); structure, markers and coefficients of ``model`` are
    kept, only the float parameters change.
    """
    if not isinstance(model, Model):
        raise Error(f"update_model writes into a svdistill.Model, got {type(model).__name__}")
    if not isinstance(module, NnetModule):
        raise Error(f"update_model reads a module made by to_module, got {type(module).__name__}")
    if len(model.components) != len(module.layers):
        raise Error(f"the module has {len(module.layers)} layers, the model {len(model.components)} components")
    # Everything is checked before anything is written: an error leaves the model as it was.
    updates = []
    with torch.no_grad():
        for i, (c, layer) in enumerate(zip(model.components, module.layers)):
            if c.kind != layer.kind or c.input_dim != layer.input_dim or c.output_dim != layer.output_dim:
                raise Error(f"component {i + 1}: the model has {c.marker} {c.input_dim} -> {c.output_dim}, "
                            f"the module {layer.marker} {layer.input_dim} -> {layer.output_dim}")
            params = c.params
            for name, value in _named_params(cast(_Layer, layer)):
                v = value.detach().to("cpu", torch.float32).numpy()
                if v.shape != params[name].shape:
                    raise Error(f"component {i + 1} {c.marker}: the module's {name} has shape "
                                f"{tuple(v.shape)}, the model's {params[name].shape}")
                if not np.all(np.isfinite(v)):
                    raise Error(f"component {i + 1} {c.marker}: the module's {name} is not finite "
                                "(nan or inf; Kaldi rejects such a model)")
                updates.append((params[name], v))
    for dst, v in updates:
        dst[...] = v
    return model


def _named_params(layer: _Layer):
    """(nnet-info parameter name, tensor) pairs of one layer."""
    if isinstance(layer, Affine):
        yield "linearity", layer.weight
        if layer.bias is not None:
            yield "bias", layer.bias
    elif isinstance(layer, ParametricRelu):
        yield "alpha", layer.alpha
        yield "beta", layer.beta
    elif isinstance(layer, Shift):
        yield layer.param_name, layer.data


class ForwardModule(nn.Module):
    """What ``svdistill forward`` outputs, as a module: an :class:`NnetModule`
    followed by nnet-forward's options (``no_softmax``, ``apply_log``, priors)."""

    def __init__(self, net: NnetModule, *, no_softmax: bool = False, apply_log: bool = False,
                 scaled_log_priors: Optional[np.ndarray] = None) -> None:
        super().__init__()
        from .forward import _check_output_options
        _check_output_options(apply_log, no_softmax, 1.0)
        self.net = net
        self.upto = len(net.layers) - 1 if no_softmax and net.ends_in_softmax else None
        self.apply_log = apply_log
        self.register_buffer("priors", None if scaled_log_priors is None else _tensor(scaled_log_priors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x, self.upto)
        if self.apply_log:
            y = torch.log(y + 1e-20)
        if self.priors is not None:
            y = y - self.priors
        return y


def forward_module(model: ModelLike, feature_transform: Optional[ModelLike] = None, *,
                   no_softmax: bool = False, apply_log: bool = False,
                   class_frame_counts: Optional[Union[str, np.ndarray]] = None,
                   prior_scale: float = 1.0) -> ForwardModule:
    """A module computing :func:`svdistill.forward` with the same options."""
    import warnings

    from .forward import _priors
    net = to_module(model, feature_transform)
    if no_softmax and not net.ends_in_softmax:
        warnings.warn(f"--no-softmax: the last component is {net.layers[-1].marker}, not a softmax; "
                      "it is kept", stacklevel=2)
    priors = _priors(class_frame_counts, prior_scale, net.output_dim)
    return ForwardModule(net, no_softmax=no_softmax, apply_log=apply_log, scaled_log_priors=priors)
