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
    import scipy_openblas32 as _openblas  # noqa: F401  (the BLAS that _core links against)
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
