"""svdistill: make large Kaldi nnet1 acoustic models small.

Read and write nnet1 models (Kaldi text, Kaldi binary, PDNN-style text) with a
streaming C++ core; restructure weight matrices by truncated SVD; recover the
lost accuracy by knowledge distillation.
"""
from __future__ import annotations

import scipy_openblas32 as _openblas  # noqa: F401  (loads the BLAS that _core links against)

from .errors import Error, FormatError, RankError
from .model import Component, Model
from .io import iter_components, read, write
from .info import info
from .compress import compress
from .report import CompressReport, LayerReport
from .spectrum import spectrum
from .forward import Network, forward
from .compare import compare
from .distill import DistillReport, EpochReport, distill
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
    "compare",
    "compress",
    "distill",
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
