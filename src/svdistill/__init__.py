"""svdistill: make large Kaldi nnet1 acoustic models small.

Read and write nnet1 models (Kaldi text, Kaldi binary, PDNN-style text) with a
streaming C++ core; restructure weight matrices by truncated SVD; recover the
lost accuracy by knowledge distillation.
"""
from __future__ import annotations

from ._core import Error, FormatError
from .model import Component, Model
from .io import iter_components, read, write
from .info import info

__version__ = "0.1.0"

__all__ = [
    "Component",
    "Error",
    "FormatError",
    "Model",
    "info",
    "iter_components",
    "read",
    "write",
    "__version__",
]
