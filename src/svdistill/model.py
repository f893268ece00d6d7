"""In-memory nnet1 models: :class:`Model` and :class:`Component`.

A component wraps the C++ core's object. Parameters (``weight``, ``bias``, ...)
are numpy views of the core's float32 storage: reading them copies nothing, and
writing into them changes the model.
"""
from __future__ import annotations

import operator
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .errors import option_error


def _real_matrix(name: str, value) -> np.ndarray:
    """``value`` as a 2-D array of real numbers, or an Error naming ``name``."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise option_error(name, f"must be a 2-D (out, in) array of numbers: {e}") from None
    if a.ndim != 2:
        raise option_error(name, f"must be a 2-D (out, in) array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise option_error(name, f"must be an array of real numbers, got dtype {a.dtype}")
    return a


def _real(name: str, value) -> float:
    if isinstance(value, (str, bytes)) or value is None:
        raise option_error(name, f"must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise option_error(name, f"must be a number, got {value!r}") from None

#: Kinds with a weight matrix that compress can factor or produce.
WEIGHT_KINDS = ("AffineTransform", "LinearTransform")


class Component:
    """One nnet1 component.

    Attributes
    ----------
    kind : str
        Kaldi's canonical name (``"AffineTransform"``, ``"Sigmoid"``, ...); the
        PDNN-only activations are ``"Relu"`` and ``"Linear"``; a marker nobody
        knows gives ``"Unknown"`` (its bytes are kept and written back).
    marker : str
        The marker as written in the input, e.g. ``"<affinetransform>"``.
    input_dim, output_dim : int
    """

    __slots__ = ("_c",)

    def __init__(self, core: "_core.Component") -> None:
        if not isinstance(core, _core.Component):
            raise _core.Error(f"Component() wraps a component of the core, got {type(core).__name__}; build "
                              "one with Component.affine, Component.linear or Component.activation")
        self._c = core

    # -- construction -------------------------------------------------------
    @classmethod
    def affine(cls, weight: np.ndarray, bias: Optional[np.ndarray] = None, *,
               learn_rate_coef: float = 1.0, bias_learn_rate_coef: float = 1.0,
               max_norm: float = 0.0) -> "Component":
        """A new ``<AffineTransform>`` y = W x + b with W of shape (out, in)."""
        w = _real_matrix("weight", weight)
        coefs = (_real("learn_rate_coef", learn_rate_coef), _real("bias_learn_rate_coef", bias_learn_rate_coef),
                 _real("max_norm", max_norm))
        c = cls(_core.make_affine(int(w.shape[0]), int(w.shape[1])))
        c.weight = w
        if bias is not None:
            c.bias = bias
        c.learn_rate_coef, c.bias_learn_rate_coef, c.max_norm = coefs
        return c

    @classmethod
    def linear(cls, weight: np.ndarray, *, learn_rate_coef: float = 1.0) -> "Component":
        """A new ``<LinearTransform>`` y = W x with W of shape (out, in)."""
        w = _real_matrix("weight", weight)
        lr = _real("learn_rate_coef", learn_rate_coef)
        c = cls(_core.make_linear(int(w.shape[0]), int(w.shape[1])))
        c.weight = w
        c.learn_rate_coef = lr
        return c

    @classmethod
    def activation(cls, kind: str, dim: int) -> "Component":
        """A new component of one dimension (``"Sigmoid"``, ``"Softmax"``, ``"Relu"``, ``"Dropout"``, ...).

        Kinds with a parameter vector start from Kaldi's initial values (set them
        through :attr:`params`): ``"AddShift"`` 0, ``"Rescale"`` 1,
        ``"ParametricRelu"`` alpha 1 and beta 0.
        """
        if not isinstance(kind, str):
            raise option_error("kind", f"must be a component kind such as 'Sigmoid', got {kind!r}")
        try:
            n = operator.index(dim)
        except TypeError:
            raise option_error("dim", f"must be an integer, got {dim!r}") from None
        return cls(_core.make_simple(kind, n))

    def copy(self) -> "Component":
        """A deep copy (parameters included)."""
        return Component(self._c.copy())

    # -- identity -----------------------------------------------------------
    @property
    def kind(self) -> str:
        return self._c.kind

    @property
    def marker(self) -> str:
        return self._c.marker

    @property
    def input_dim(self) -> int:
        return self._c.input_dim

    @property
    def output_dim(self) -> int:
        return self._c.output_dim

    @property
    def num_params(self) -> Optional[int]:
        """Parameter count as ``nnet-info`` counts it; None for kinds kept as raw bytes."""
        return self._c.num_params

    @property
    def modelled(self) -> bool:
        """False for kinds svdistill keeps as raw bytes (LSTM, convolution, unknown markers)."""
        return self._c.modelled

    # -- parameters ---------------------------------------------------------
    @property
    def params(self) -> Dict[str, np.ndarray]:
        """Float parameters by their nnet-info names (``linearity``, ``bias``, ``alpha``, ...)."""
        return {name: self._c.param(i) for i, name in enumerate(self._c.param_names)}

    def _param(self, name: str) -> Optional[np.ndarray]:
        i = _core.param_index(self._c, name)
        return None if i < 0 else self._c.param(i)

    def _set_param(self, name: str, value: np.ndarray) -> None:
        i = _core.param_index(self._c, name)
        if i < 0:
            raise _core.Error(f"{self.kind} has no parameter {name!r}")
        self._c.set_param(i, np.asarray(value))

    @property
    def weight(self) -> Optional[np.ndarray]:
        """The (output_dim, input_dim) float32 weight matrix of an affine/linear layer, else None."""
        return self._param("linearity")

    @weight.setter
    def weight(self, value: np.ndarray) -> None:
        self._set_param("linearity", value)

    @property
    def bias(self) -> Optional[np.ndarray]:
        """The (output_dim,) float32 bias of an ``<AffineTransform>``, else None."""
        return self._param("bias") if self.kind == "AffineTransform" else None

    @bias.setter
    def bias(self, value: np.ndarray) -> None:
        self._set_param("bias", value)

    @property
    def coefs(self) -> Dict[str, float]:
        """Scalar attributes by token (``{"<LearnRateCoef>": 1.0, ...}``), in Kaldi's order."""
        return dict(self._c.coefs)

    def _coef(self, token: str) -> Optional[float]:
        return self._c.coefs.get(token)

    def _set_coef(self, token: str, value: float) -> None:
        self._c.set_coef(token, _real(token, value))

    learn_rate_coef = property(lambda self: self._coef("<LearnRateCoef>"),
                               lambda self, v: self._set_coef("<LearnRateCoef>", v),
                               doc="``<LearnRateCoef>`` (None if the kind has none).")
    bias_learn_rate_coef = property(lambda self: self._coef("<BiasLearnRateCoef>"),
                                    lambda self, v: self._set_coef("<BiasLearnRateCoef>", v),
                                    doc="``<BiasLearnRateCoef>`` of an affine layer.")
    max_norm = property(lambda self: self._coef("<MaxNorm>"),
                        lambda self, v: self._set_coef("<MaxNorm>", v),
                        doc="``<MaxNorm>`` of an affine layer (0 = off).")

    @property
    def ints(self) -> Optional[np.ndarray]:
        """Integer data: Splice frame offsets, Copy indices (1-based, as in the file), BlockSoftmax dims."""
        return self._c.ints

    @property
    def raw(self) -> Optional[bytes]:
        """For kinds kept as raw bytes: the bytes after the dims, else None."""
        return self._c.raw

    def __repr__(self) -> str:
        n = self.num_params
        extra = "" if n is None or n == 0 else f", {n:,} params"
        return f"<Component {self.kind} {self.input_dim} -> {self.output_dim}{extra}>"


class Model:
    """An nnet1 model: a list of components plus where it came from.

    Attributes
    ----------
    components : list of Component
    binary : bool
        Encoding of the source (the default encoding when written back).
    dialect : str
        ``"kaldi"`` or ``"pdnn"``: dialect of the source (the default when written).
    source : str or None
        Path or name of the input.
    """

    def __init__(self, components: Iterable[Component] = (), *, binary: bool = False,
                 dialect: str = "kaldi", source: Optional[str] = None) -> None:
        if components is None or isinstance(components, (str, bytes)):
            raise _core.Error(f"Model() takes a list of Components, got {type(components).__name__} "
                              "(read a file with svdistill.read(path))")
        self.components: List[Component] = list(components)
        for i, c in enumerate(self.components, 1):
            if not isinstance(c, Component):
                raise _core.Error(f"Model(): item {i} is a {type(c).__name__}, not a Component")
        self.binary = binary
        self.dialect = dialect
        self.source = source

    def __len__(self) -> int:
        return len(self.components)

    def __iter__(self) -> Iterator[Component]:
        return iter(self.components)

    def __getitem__(self, i: Union[int, slice]) -> Union[Component, Sequence[Component]]:
        return self.components[i]

    @property
    def input_dim(self) -> int:
        return self.components[0].input_dim if self.components else 0

    @property
    def output_dim(self) -> int:
        return self.components[-1].output_dim if self.components else 0

    @property
    def num_params(self) -> int:
        """Total parameter count as ``nnet-info`` counts it, over the components whose count
        is known: a component kept as raw bytes of an updatable kind (LSTM, convolution)
        or with a marker nobody knows adds nothing here; :attr:`uncounted` lists them."""
        return sum(c.num_params or 0 for c in self.components)

    @property
    def uncounted(self) -> List[int]:
        """1-based indices of the components whose parameter count is unknown (left out
        of :attr:`num_params`)."""
        return [i for i, c in enumerate(self.components, 1) if c.num_params is None]

    def write(self, path, **options) -> None:
        """Shorthand for :func:`svdistill.write` (model, path, **options)."""
        from .io import write
        write(self, path, **options)

    def __repr__(self) -> str:
        kinds = ", ".join(c.kind for c in self.components[:6])
        more = ", ..." if len(self.components) > 6 else ""
        return (f"<Model {self.input_dim} -> {self.output_dim}: {len(self)} components "
                f"[{kinds}{more}], {self.num_params:,} params, "
                f"{'binary' if self.binary else 'text'}/{self.dialect}>")


def same_model(a: Model, b: Model) -> bool:
    """Whether two models compute the same function: the same components, coefficients and
    numbers (as read; how each was written does not matter)."""
    if len(a.components) != len(b.components):
        return False
    for x, y in zip(a.components, b.components):
        if (x.marker, x.input_dim, x.output_dim, sorted(x.coefs.items())) != \
                (y.marker, y.input_dim, y.output_dim, sorted(y.coefs.items())):
            return False
        if not np.array_equal(np.asarray(x.ints if x.ints is not None else []),
                              np.asarray(y.ints if y.ints is not None else [])):
            return False
        if list(x.params) != list(y.params) or not all(np.array_equal(x.params[k], y.params[k]) for k in x.params):
            return False
    return True
