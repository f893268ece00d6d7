"""Export an nnet1 model, with nnet-forward's options, to ONNX or TorchScript.

The exported graph computes what ``svdistill forward`` (Kaldi's
``nnet-forward``) computes for one utterance: input ``feats``, a
(frames x input_dim) float32 matrix; output ``out``, (frames x output_dim)
float32: posteriors, log-posteriors (``apply_log``), pre-softmax activations
(``no_softmax``) or pseudo log-likelihoods (``class_frame_counts``). The frame
axis is dynamic. A ``<Splice>`` (in the model or in the feature transform)
reads neighbouring frames and repeats the first and last frame at the edges,
so one call must hold one whole utterance, as one nnet-forward utterance.

PyTorch (and, for ONNX, the ``onnx`` package) is imported when ``export`` is
called, not when this module is: ``import svdistill`` works without them.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from typing import Any, Dict, Optional, Union

import numpy as np

from .errors import Error, option_error
from .forward import ModelLike, _check_output_options
from .io import atomic_output, same_file

__all__ = ["FORMATS", "export"]

#: The formats :func:`export` writes.
FORMATS = ("onnx", "torchscript")

# Frames of the example utterance the graph is traced on, and the other lengths
# a TorchScript trace is checked on (a length baked into the graph fails the check).
_TRACE_FRAMES = 7
_CHECK_FRAMES = (1, 2, 12)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _check_output(output: Any, model: Any, feature_transform: Any) -> str:
    if not _is_path(output):
        raise Error(f"export: the output must be a file name, got {type(output).__name__}")
    path = os.fspath(output)
    if path in ("", "-"):
        raise Error("export: the output must be a file name (an exported model cannot go to stdout)")
    if os.path.isdir(path):
        raise Error(f"{path}: is a directory; give a file name for the output")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise Error(f"{path}: cannot write the export: the folder {folder} does not exist")
    for what, src in (("the model", model), ("the feature transform", feature_transform)):
        if _is_path(src) and os.fspath(src) != "-" and same_file(path, os.fspath(src)):
            raise Error(f"{path} is {what}: refusing to overwrite it")
    return path


def _import_torch():
    try:
        import torch
    except ImportError:
        raise Error("export needs PyTorch: pip install 'svdistill[torch]'") from None
    return torch


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise Error("export --format onnx needs the onnx package: pip install onnx") from None
    return onnx


def _output_kind(ends_in_softmax: bool, no_softmax: bool, apply_log: bool, priors: bool) -> str:
    if priors and apply_log and ends_in_softmax:
        return "pseudo log-likelihoods"
    if no_softmax and ends_in_softmax:
        kind = "pre-softmax activations"
    elif apply_log:
        kind = "log-posteriors" if ends_in_softmax else "log-outputs"
    else:
        kind = "posteriors" if ends_in_softmax else "outputs"
    return kind + (" minus scaled log priors" if priors else "")


def export(model: ModelLike, output: Union[str, "os.PathLike[str]"], *, format: str = "onnx",
           feature_transform: Optional[ModelLike] = None, no_softmax: bool = False,
           apply_log: bool = False, class_frame_counts: Optional[Union[str, np.ndarray]] = None,
           prior_scale: float = 1.0, opset: Optional[int] = None) -> Dict[str, Any]:
    """Write ``model`` (with ``feature_transform`` run first) as an ONNX or TorchScript file.

    Parameters
    ----------
    model, feature_transform : Model or path
    output : path
        Written atomically (a temporary file beside it, renamed into place when
        complete; ``SVDISTILL_FSYNC=1`` flushes it to disk first). It may not be
        the model or the feature transform.
    format : "onnx" or "torchscript"
        ONNX via PyTorch's TorchScript-based exporter; TorchScript via
        ``torch.jit.trace`` (load it with ``torch.jit.load``; svdistill is not needed).
    no_softmax, apply_log, class_frame_counts, prior_scale
        As :func:`svdistill.forward`.
    opset : int, optional
        ONNX opset version (default: PyTorch's).

    Returns
    -------
    dict with ``path``, ``format``, ``opset`` (ONNX; else None), ``input_dim``,
    ``output_dim``, ``output_kind`` (e.g. ``"posteriors"``) and ``bytes``.
    """
    if format not in FORMATS:
        raise option_error("format", f"must be {' or '.join(FORMATS)}, got {format!r}")
    _check_output_options(apply_log, no_softmax, prior_scale, class_frame_counts)
    if opset is not None:
        if format != "onnx":
            raise option_error("opset", "applies to the onnx {format} only", others=["format"])
        if isinstance(opset, bool) or not isinstance(opset, int) or opset < 1:
            raise option_error("opset", f"must be a positive integer, got {opset!r}")
    path = _check_output(output, model, feature_transform)
    torch = _import_torch()
    if format == "onnx":
        onnx = _import_onnx()
        if opset is not None:
            _check_opset(opset)
    from .torch import forward_module

    module = forward_module(model, feature_transform, no_softmax=no_softmax, apply_log=apply_log,
                            class_frame_counts=class_frame_counts, prior_scale=prior_scale)
    module.eval().requires_grad_(False)  # inference only: outputs of the loaded file need no grad
    net = module.net
    in_dim, out_dim = net.input_dim, net.output_dim
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(_TRACE_FRAMES, in_dim, generator=gen)

    with atomic_output(path) as tmp:  # beside the target, renamed when complete, removed on any error
        with torch.no_grad(), warnings.catch_warnings():
            # Only torch runs here: its deprecation notices (torch.jit, the
            # TorchScript-based ONNX exporter) and the tracer's notes are about
            # the machinery, not about the model.
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if format == "onnx":
                used_opset = _export_onnx(torch, module, example, tmp, opset)
                try:
                    onnx.checker.check_model(tmp)
                except Exception as e:  # pragma: no cover - a torch exporter bug
                    raise Error(f"{path}: the exported ONNX model does not pass onnx.checker: {e}") from None
            else:
                used_opset = None
                checks = [(torch.randn(n, in_dim, generator=gen),) for n in _CHECK_FRAMES]
                try:
                    traced = torch.jit.trace(module, (example,), check_inputs=checks, check_tolerance=1e-5)
                except torch.jit.TracingCheckError as e:  # e.g. a frame count baked into the graph
                    raise Error(f"{path}: the traced TorchScript module does not reproduce the model "
                                f"at other utterance lengths: {str(e).splitlines()[0]}") from None
                torch.jit.save(traced, tmp)
    return {"path": path, "format": format, "opset": used_opset, "input_dim": in_dim,
            "output_dim": out_dim,
            "output_kind": _output_kind(net.ends_in_softmax, no_softmax, apply_log,
                                        class_frame_counts is not None),
            "bytes": os.path.getsize(path)}


def _check_opset(opset: int) -> None:
    """The opsets PyTorch's TorchScript-based exporter writes (where this torch says)."""
    try:
        from torch.onnx import _constants as c
        lo, hi = c.ONNX_MIN_OPSET, c.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except (ImportError, AttributeError):  # another torch: let the exporter decide
        return
    if not lo <= opset <= hi:
        raise Error(f"export: opset {opset} is not one PyTorch's ONNX exporter (dynamo=False) "
                    f"writes: {lo} to {hi}")


@contextlib.contextmanager
def _output_kept_on_success():
    """Hold back what is written to file descriptors 1 and 2 meanwhile; pass it on only
    if the block succeeds.

    When it fails, PyTorch's TorchScript-based ONNX exporter prints the whole Torch IR
    graph from C++ to stdout (its log is switched on during every export), which would
    pollute the caller's stdout and bury the one-line error this module raises instead.
    """
    held = []  # (fd, a duplicate of the original, the file holding what was written)
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            if stream is not None:
                stream.flush()
            saved = os.dup(fd)
        except (OSError, ValueError):  # no usable descriptor: nothing to hold back
            continue
        buf = tempfile.TemporaryFile()
        os.dup2(buf.fileno(), fd)
        held.append((fd, stream, saved, buf))
    ok = False
    try:
        yield
        ok = True
    finally:
        for fd, stream, saved, buf in held:
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, fd)
            os.close(saved)
            if ok:
                buf.seek(0)
                data = buf.read()
                while data:
                    data = data[os.write(fd, data):]
            buf.close()


def _export_onnx(torch, module, example, tmp: str, opset: Optional[int]) -> int:
    kw = {} if opset is None else {"opset_version": opset}
    try:
        with _output_kept_on_success():
            torch.onnx.export(module, (example,), tmp, input_names=["feats"], output_names=["out"],
                              dynamic_axes={"feats": {0: "frames"}, "out": {0: "frames"}},
                              dynamo=False, **kw)
    except (ValueError, RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise Error(f"export: PyTorch could not export the model to ONNX"
                    f"{'' if opset is None else f' at opset {opset}'}: {first}") from None
    import onnx
    return next((o.version for o in onnx.load(tmp, load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx")), 0)
