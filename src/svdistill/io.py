"""Reading and writing nnet1 models (the streaming work is done in C++)."""
from __future__ import annotations

import gzip
import os
import warnings
from typing import IO, Iterable, Iterator, Optional, Union

from . import _core
from .model import Component, Model

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


class ConversionWarning(UserWarning):
    """Emitted when writing changes a model's form (e.g. PDNN ``<relu>`` to Kaldi's ``<ParametricRelu>``)."""


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (False if either does not exist): outputs that
    would overwrite an input are refused with it."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_gzip(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _open_reader(src: PathOrFile) -> "_core.Reader":
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not _core.have_zlib and path != "-" and _is_gzip(path):
            return _core.Reader(gzip.open(path, "rb"), path)
        return _core.Reader(path)
    if hasattr(src, "read"):
        name = getattr(src, "name", None)
        name = name if isinstance(name, str) else "<file>"
        if not _core.have_zlib:  # the core cannot inflate: let Python's gzip do it
            head = src.peek(2)[:2] if hasattr(src, "peek") else b""
            if not head and hasattr(src, "seekable") and src.seekable():
                pos = src.tell()
                head = src.read(2)
                src.seek(pos)
            if head == b"\x1f\x8b":
                src = gzip.GzipFile(fileobj=src, mode="rb")
        return _core.Reader(src, name)
    raise TypeError(f"expected a path, '-' or a binary file object, got {type(src).__name__}")


class ComponentStream:
    """Iterator over the components of a model file, one at a time.

    ``binary`` is known at once; ``dialect`` after the first component.
    """

    def __init__(self, src: PathOrFile) -> None:
        self._reader = _open_reader(src)

    @property
    def binary(self) -> bool:
        return self._reader.binary

    @property
    def dialect(self) -> str:
        return self._reader.dialect

    @property
    def name(self) -> str:
        return self._reader.name

    def __iter__(self) -> "ComponentStream":
        return self

    def __next__(self) -> Component:
        core = self._reader.next()
        if core is None:
            raise StopIteration
        return Component(core)


def iter_components(src: PathOrFile) -> ComponentStream:
    """Stream the components of a model: memory holds one component at a time.

    Parameters
    ----------
    src : path, ``"-"`` (stdin) or binary file object
        Kaldi text, Kaldi binary or PDNN-style text; gzip is detected by content.

    Returns
    -------
    ComponentStream
        An iterator of :class:`Component` with ``binary`` and ``dialect`` attributes.

    Raises
    ------
    svdistill.FormatError
        On malformed input, naming the file, position and component.
    """
    return ComponentStream(src)


def read(src: PathOrFile) -> Model:
    """Read a whole model.

    Examples
    --------
    >>> m = svdistill.read("final.nnet")            # doctest: +SKIP
    >>> m.components[0].weight.shape                 # doctest: +SKIP
    (1024, 440)
    """
    stream = ComponentStream(src)
    comps = list(stream)
    return Model(comps, binary=stream.binary, dialect=stream.dialect, source=stream.name)


def write(model: Union[Model, Iterable[Component]], dst: PathOrFile, *,
          binary: Optional[bool] = None, dialect: Optional[str] = None,
          digits: str = "shortest") -> None:
    """Write a model (or a stream of components) atomically.

    Parameters
    ----------
    model : Model, ComponentStream or iterable of Component
    dst : path, ``"-"`` (stdout) or binary file object
        A path is written to a temporary file beside it and renamed into place
        when complete: on error nothing is left and an existing file is untouched.
    binary : bool, optional
        Kaldi binary (True) or text (False). Default: the source's encoding (text
        for a plain list of components).
    dialect : {"kaldi", "pdnn"}, optional
        Default: the source's dialect. Writing Kaldi from PDNN maps ``<relu>`` to
        ``<ParametricRelu>`` (alpha 1, beta 0) and drops the identity ``<linear>``,
        with a :class:`ConversionWarning`.
    digits : {"shortest", "kaldi"}
        Text numbers: the shortest digits that read back to the same float32
        (exact, default), or Kaldi's own 7 significant digits (byte-identical to
        ``nnet-copy --binary=false``, may round).
    """
    comps: Iterator[Component] = iter(model)
    first = next(comps, None)  # a stream knows its dialect after one component
    src_binary = getattr(model, "binary", False)
    src_dialect = getattr(model, "dialect", "kaldi")
    binary = src_binary if binary is None else bool(binary)
    if dialect is None:
        dialect = "kaldi" if binary else src_dialect
    if isinstance(dst, (str, os.PathLike)):
        target, name = os.fspath(dst), os.fspath(dst)
    elif hasattr(dst, "write"):
        target, name = dst, getattr(dst, "name", "<file>")
        name = name if isinstance(name, str) else "<file>"
    else:
        raise TypeError(f"expected a path, '-' or a binary file object, got {type(dst).__name__}")
    writer = _core.Writer(target, name, binary, dialect, digits)
    try:
        if first is not None:
            writer.write(first._c)
            for c in comps:
                writer.write(c._c)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    for note in writer.notes():
        warnings.warn(note, ConversionWarning, stacklevel=2)
