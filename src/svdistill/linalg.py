"""Truncated SVD and singular values, computed by the C++ core.

The core works on float32 data with multi-threaded OpenBLAS kernels and does
the small dense SVD of the randomized method in float64. The GIL is released
while it runs; results come back as numpy arrays without copies.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple, cast

import numpy as np

from . import _core
from .errors import NOT_GIVEN, option_error, renamed

__all__ = ["truncated_svd", "singular_values", "set_num_threads", "get_num_threads", "blas_core"]


def _as_f32(a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise _core.Error(f"expected a 2-D matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise _core.Error("the matrix has nan or inf entries")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _int_option(name: str, value, minimum: int, maximum: Optional[int] = None,
                cls=_core.Error) -> int:
    """``value`` as an int in [minimum, maximum], else an option_error naming ``name``.
    Floats are refused rather than truncated (2.5 is not a rank)."""
    ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok:
        raise option_error(name, f"must be an integer, got {value!r}", cls)
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        where = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise option_error(name, f"must be an integer {where}, got {v}", cls)
    return v


def _fraction_option(name: str, value, cls=_core.Error, low_open: bool = True) -> float:
    """``value`` as a float in (0, 1] (``low_open=False``: [0, 1)), else an option_error."""
    ok = isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else float("nan")
    inside = (0 < v <= 1) if low_open else (0 <= v < 1)
    if not inside:
        span = "(0, 1]" if low_open else "[0, 1)"
        raise option_error(name, f"must be a number in {span}, got {value!r}", cls)
    return v


def _seed(seed) -> int:
    if seed is None:
        return int(cast(int, np.random.SeedSequence().entropy) % (1 << 63))  # drawn from the OS: an int
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 1 << 63))
    if isinstance(seed, (numbers.Integral, np.integer)) and not isinstance(seed, bool):
        if not 0 <= int(seed) < (1 << 64):
            raise option_error("seed", f"must be an integer in 0..2**64-1, got {seed}")
        return int(seed)
    raise option_error("seed", f"must be None, a non-negative integer or a numpy Generator, got {seed!r}")


def _svd_options(oversamples, n_iter) -> Tuple[int, int]:
    """The randomized method's settings as the core takes them (-1: its default)."""
    p = -1 if oversamples is None else _int_option("oversamples", oversamples, 0)
    q = -1 if n_iter is None else _int_option("n_iter", n_iter, 0, 1000)
    return p, q


#: The SVD methods; "auto" is resolved by the core (cpp/linalg/compress.h, resolve_method).
METHODS = ("auto", "randomized", "exact")


def _method_option(method) -> str:
    if method not in METHODS:
        raise option_error("method", f"must be 'auto', 'randomized' or 'exact', got {method!r}")
    return method


def truncated_svd(a, rank: int, *, method: str = "auto", oversamples: Optional[int] = None,
                  n_iter: Optional[int] = None,
                  seed=0, n_oversamples: Any = NOT_GIVEN,
                  random_state: Any = NOT_GIVEN) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets of a matrix.

    Parameters
    ----------
    a : array_like, shape (m, n)
        Converted to float32 (no copy if it already is C-contiguous float32).
    rank : int
        Number of singular values/vectors, 0 <= rank <= min(m, n).
    method : {"auto", "randomized", "exact"}
        ``"exact"``: LAPACK divide and conquer in float64. ``"randomized"``:
        Halko, Martinsson & Tropp (2011) range finder, Gaussian sketch of
        ``rank + oversamples`` columns, ``n_iter`` power iterations each
        re-orthonormalized (Cholesky QR, Householder when ill-conditioned), the
        small SVD in float64. The iterations run on A, or, where that costs fewer
        flops (tall or wide matrices, wide sketches), on the Gram matrix of A's
        smaller side with one iteration more (never less accurate).
        ``"auto"`` picks randomized unless the sketch would cover more than half
        of min(m, n) or the matrix is small.
    oversamples : int, optional
        Extra sketch columns; default max(32, rank // 4) (the core's default_oversamples).
    n_iter : int, optional
        Power iterations; default 2. (These defaults gave 1.002-1.0045x the
        optimal error on realistic weight spectra at k = 128..512 for the least
        time among the settings measured; see benchmarks/bench_svd.py.)
    seed : int, numpy Generator or None
        Seed of the Gaussian sketch. Results are bit-identical for a seed and a
        thread count; across thread counts they agree to rounding (signs are
        normalised: the largest entry of each column of U is positive).
    n_oversamples, random_state
        The old names of ``oversamples`` and ``seed`` (deprecated).

    Returns
    -------
    U : ndarray, shape (m, rank), float32
    s : ndarray, shape (rank,), float64, descending
    Vt : ndarray, shape (rank, n), float32

    Examples
    --------
    >>> U, s, Vt = truncated_svd(W, 256)        # doctest: +SKIP
    >>> W_approx = (U * s) @ Vt                 # doctest: +SKIP
    """
    if n_oversamples is not NOT_GIVEN:
        oversamples = renamed("truncated_svd", "n_oversamples", "oversamples", n_oversamples, oversamples, None)
    if random_state is not NOT_GIVEN:
        seed = renamed("truncated_svd", "random_state", "seed", random_state, seed, 0)
    arr = _as_f32(a)
    m, n = arr.shape
    k = _int_option("rank", rank, -(1 << 62))
    if not 0 <= k <= min(m, n):
        raise option_error("rank", f"must lie in 0..{min(m, n)} for a {m}x{n} matrix, got {k}")
    p, q = _svd_options(oversamples, n_iter)
    U, s, Vt, *_ = _core.truncated_svd(arr, k, _method_option(method), p, q, _seed(seed))
    return U, s, Vt


def singular_values(a) -> np.ndarray:
    """All min(m, n) singular values of ``a``, descending, as float64.

    Computed from the float64 Gram matrix of the smaller side (built in blocks,
    so no float64 copy of ``a`` exists at once) and its eigenvalues: fast, and
    accurate to about 1e-7 of the largest singular value, which is what rank
    selection by energy needs.
    """
    return _core.singular_values(_as_f32(a))


#: More threads than any machine has cores: a larger request is a mistake.
MAX_THREADS = 4096


def set_num_threads(n: int) -> None:
    """Threads the core uses: 1..4096, or 0 for the default (all cores, or
    $SVDISTILL_NUM_THREADS). Errors name the option ``threads``."""
    _core.set_num_threads(_int_option("threads", n, 0, MAX_THREADS))


def get_num_threads() -> int:
    return _core.get_num_threads()


def blas_core() -> str:
    """The CPU kernel OpenBLAS selected at run time (e.g. ``"Haswell"``, ``"SkylakeX"``)."""
    return _core.blas_core()
