"""Types of svdistill._core, the compiled C++ core (cpp/bindings/*.cc).

Private: use the svdistill package. tests/test_stubs.py checks this file against the
built module: the same names, and for each function and method the same parameters
(names, order, defaults). Names starting with "_" here are typing helpers only.

Parameters that pybind11 leaves unnamed (its "arg0", "arg1") cannot be passed by
keyword, so they are positional-only here (before "/"). The core's parameter "in" is a
Python keyword: it is "in_" here, positional-only, as is every parameter before it.
"""

from typing import Dict, Optional, Protocol, Sequence, Tuple, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

class _ReadableBinary(Protocol):
    # read(n) must return bytes (a text-mode file is refused with Error).
    def read(self, n: int, /) -> bytes: ...

class _WritableBinary(Protocol):
    # write(bytes); flush() is called at close when the object has one.
    def write(self, data: bytes, /) -> object: ...

class _BuildInfo(TypedDict):
    compiler: str
    cxx_standard: str
    build_type: str
    threads: int
    blas: str
    blas_config: str
    blas_corename: str
    blas_threads: int
    blas_threading: str
    zlib: bool
    zlib_version: Optional[str]
    arch: str
    simd: str
    simd_built: list[str]
    simd_forced_portable: bool
    cpu_x86_64_v3: bool
    cpu_avx512f: bool

# A minibatch's statistics, summed over its frames: the keys are
# svdistill.distill.engine.STAT_KEYS (frames, objective, kl_t, kl, hard_ce, agree, blocks,
# correct, labelled); the counts are ints. A plain dict type: the engines add them up.
_BatchStats = Dict[str, float]

class _Slot(TypedDict):
    component: int
    param: int
    coef: float
    momentum: bool
    decay: bool
    max_norm: float

# u (m x k), s (k, descending), vt (k x n), the input's squared Frobenius norm, the
# final sketch's columns (randomized methods; 0 for exact), the route taken
# ("exact", "direct" or "gram").
_SvdResult = Tuple[
    npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.float32], float, int, str
]

have_zlib: bool

class Error(Exception):
    """Base class of every error svdistill raises on purpose."""

class FormatError(Error):
    """Malformed model input. The attributes are set when the core raises it."""

    file: str
    offset: int
    line: Optional[int]
    column: Optional[int]
    component_index: Optional[int]
    marker: Optional[str]

class Component:
    # No constructor: components come from make_affine, make_linear, make_simple,
    # Reader.next and copy().
    @property
    def kind(self) -> str: ...
    @property
    def marker(self) -> str: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def modelled(self) -> bool: ...
    @property
    def num_params(self) -> Optional[int]: ...
    @property
    def param_names(self) -> list[str]: ...
    def param(self, index: int, /) -> npt.NDArray[np.float32]:
        """A view of the component's storage (1-D, or 2-D for a matrix)."""
    def set_param(self, index: int, value: npt.ArrayLike, /) -> None: ...
    @property
    def coefs(self) -> dict[str, float]: ...
    def set_coef(self, token: str, value: float, /) -> None: ...
    @property
    def ints(self) -> Optional[npt.NDArray[np.int32]]: ...
    @property
    def raw(self) -> Optional[bytes]: ...
    @property
    def raw_binary(self) -> bool: ...
    def copy(self) -> Component: ...
    def check(self) -> str: ...

class Network:
    def __init__(self, components: Sequence[Component], transform_count: int = 0) -> None: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def size(self) -> int: ...
    def forward(self, feats: npt.ArrayLike, upto: int = -1) -> npt.NDArray[np.float32]: ...

class Reader:
    @overload
    def __init__(self, path: str, skip_data: bool = False) -> None: ...
    @overload
    def __init__(self, file: _ReadableBinary, name: str) -> None: ...
    @property
    def binary(self) -> bool: ...
    @property
    def dialect(self) -> str: ...
    @property
    def name(self) -> str: ...
    def next(self) -> Optional[Component]: ...

class Writer:
    def __init__(
        self, target: Union[str, _WritableBinary], name: str, binary: bool, dialect: str, digits: str
    ) -> None: ...
    def write(self, component: Component, /) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def notes(self) -> list[str]: ...
    @property
    def components_written(self) -> int: ...

class Trainer:
    def __init__(self, student: Sequence[Component], teachers: Sequence[Network]) -> None: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    def train(
        self,
        x: npt.ArrayLike,
        labels: Optional[npt.ArrayLike] = None,
        learn_rate: float = 0.008,
        momentum: float = 0.0,
        l2: float = 0.0,
        adam: bool = False,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-08,
        temperature: float = 1.0,
        hard_weight: float = 0.0,
        average_logits: bool = False,
    ) -> _BatchStats: ...
    def evaluate(
        self,
        x: npt.ArrayLike,
        labels: Optional[npt.ArrayLike] = None,
        temperature: float = 1.0,
        hard_weight: float = 0.0,
        average_logits: bool = False,
    ) -> _BatchStats: ...
    def gradients(
        self,
        x: npt.ArrayLike,
        labels: Optional[npt.ArrayLike] = None,
        temperature: float = 1.0,
        hard_weight: float = 0.0,
        average_logits: bool = False,
    ) -> Tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.float32], _BatchStats]: ...
    def reset_optimizer(self) -> None: ...
    def optimizer_state(
        self,
    ) -> Tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]], int]: ...
    def set_optimizer_state(
        self, first: Sequence[npt.ArrayLike], second: Sequence[npt.ArrayLike], step: int
    ) -> None: ...
    @property
    def slots(self) -> list[_Slot]: ...

# Components
def param_index(component: Component, name: str, /) -> int: ...
def make_affine(out: int, in_: int, /) -> Component: ...
def make_linear(out: int, in_: int, /) -> Component: ...
def make_simple(kind: str, dim: int, /) -> Component: ...
def kind_of_marker(marker: str, /) -> str: ...
def can_forward(component: Component, /) -> bool: ...
def can_train(component: Component, /) -> bool: ...

# Output files
def output_target(path: str) -> str: ...
def prepare_output(path: str) -> Tuple[str, Optional[str], int]: ...
def commit_output(tmp: str, target: str, name: str, fd: int = -1, durable: bool = False) -> None: ...
def remove_stale_temporaries(folder: str, start: str) -> None: ...

# Linear algebra and rank policies
def truncated_svd(
    a: npt.ArrayLike,
    k: int,
    method: str,
    oversamples: int = -1,
    n_iter: int = -1,
    seed: int = 0,
    route: str = "auto",
) -> _SvdResult: ...
def adaptive_energy_svd(
    a: npt.ArrayLike,
    energy: float,
    oversamples: int = -1,
    n_iter: int = -1,
    seed: int = 0,
    route: str = "auto",
) -> _SvdResult: ...
def singular_values(a: npt.ArrayLike, /) -> npt.NDArray[np.float64]: ...
def frobenius_sq(a: npt.ArrayLike, /) -> float: ...
def energy_rank(s: Sequence[float], fraction: float, total_energy: float = -1.0) -> int: ...
def nuclear_rank(s: Sequence[float], fraction: float) -> int: ...
def round_rank(k: int, multiple: int, out: int, in_: int, /) -> int: ...
def worth_factoring(k: int, out: int, in_: int, /, min_gain: float, per_rank: int = 0) -> bool: ...
def factored_params(k: int, out: int, in_: int, /, per_rank: int = 0) -> int: ...
def budget_ranks(
    layers: Sequence[Tuple[int, int, Sequence[float]]],
    budget_params: float,
    min_gain: float,
    round_to: int,
    per_rank: int = 0,
) -> list[int]: ...
def set_num_threads(n: int, /) -> None: ...
def get_num_threads() -> int: ...
def blas_core() -> str: ...
def build_info() -> _BuildInfo: ...
