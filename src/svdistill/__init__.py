"""svdistill: make large Kaldi nnet1 acoustic models small.

Read and write nnet1 models (Kaldi text, Kaldi binary, PDNN-style text) with a
streaming C++ core; restructure weight matrices by truncated SVD; recover the
lost accuracy by knowledge distillation.
"""
from __future__ import annotations

import os as _os

# OpenBLAS's worker threads spin for 2^28 cycles (~0.1 s) after each call
# before they sleep. Between its BLAS calls the core runs its own threads
# (parsing, activations, the next layer's read), which then share the cores
# with spinning workers. 2^20 cycles (~0.4 ms) still spans back-to-back calls.
# OpenBLAS reads the variable once, when _core loads it; a value the user set
# wins, and the environment is left as it was.
_timeout_was_set = "OPENBLAS_THREAD_TIMEOUT" in _os.environ
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
try:
    # _core needs libscipy_openblas.so (scipy-openblas32, a dependency). Its RUNPATH finds it
    # beside svdistill/ in one site-packages; loaded here by absolute path first, it is found
    # wherever pip put the dependency (another site-packages, a --target or user site): the
    # dynamic loader matches _core's DT_NEEDED to the loaded library's soname. RTLD_GLOBAL, as
    # scipy_openblas32 loads it itself, so both handles are one library.
    import scipy_openblas32 as _openblas
    if _os.name == "posix":
        import ctypes as _ctypes
        _ctypes.CDLL(_os.path.join(_openblas.get_lib_dir(), _openblas.get_library(fullname=True)),
                     mode=_ctypes.RTLD_GLOBAL)
    from . import _core  # noqa: F401
finally:
    if not _timeout_was_set:
        del _os.environ["OPENBLAS_THREAD_TIMEOUT"]

from .errors import Error, FormatError, RankError
from .model import Component, Model
from .io import iter_components, read, write
from .info import info
from .compress import compress
from .report import CompressReport, LayerReport
from .spectrum import spectrum
from .forward import Network, forward
from .compare import compare
from .export import export  # imports torch only when called
from .distill import DistillReport, EpochReport, TrainingStopped, distill
from . import linalg

__version__ = "0.1.0"


def build_info() -> dict:
    """The version and the compiled core's build facts (what ``svdistill --version`` prints).

    Keys: ``version``; ``compiler``, ``cxx_standard``, ``build_type``, ``arch``; ``blas``,
    ``blas_package`` (the scipy-openblas32 wheel and its version), ``blas_config``
    (OpenBLAS's version and build), ``blas_corename`` (the kernel OpenBLAS picked
    for this CPU), ``blas_threads``, ``blas_threading``; ``threads`` (the core's);
    ``zlib`` (gzip read by the core), ``zlib_version``; ``simd``: the code paths
    the core's kernels and number parser take, ``"x86-64-v3"`` (AVX2 + FMA) or
    ``"baseline"``; ``simd_built``, the paths compiled in; ``simd_forced_portable``,
    whether SVDISTILL_PORTABLE forced the baseline; ``cpu_x86_64_v3`` and
    ``cpu_avx512f``, what the CPU offers (no path of the core uses AVX-512).
    """
    facts = {"version": __version__, **_core.build_info()}
    facts["blas_package"] = f"scipy-openblas32 {getattr(_openblas, '__version__', 'unknown version')}"
    return facts


__all__ = [
    "Component",
    "CompressReport",
    "Error",
    "FormatError",
    "LayerReport",
    "Model",
    "Network",
    "RankError",
    "TrainingStopped",
    "build_info",
    "compare",
    "compress",
    "distill",
    "export",
    "DistillReport",
    "EpochReport",
    "forward",
    "info",
    "linalg",
    "spectrum",
    "iter_components",
    "read",
    "write",
    "__version__",
]
