"""Reading and writing nnet1 models (the streaming work is done in C++)."""
from __future__ import annotations

import contextlib
import gzip
import io as _io
import os
import warnings
from typing import IO, Iterable, Iterator, Optional, Tuple, Union

from . import _core
from .errors import Error, option_error
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


def output_target(path: Union[str, "os.PathLike[str]"]) -> str:
    """The file an output path will write: symbolic links followed, as ``cp`` writes through them.

    Raises :class:`Error` (naming ``path``) for a symbolic-link loop, a directory, a
    folder that does not exist or cannot be written: an output that would fail
    fails before any work. ``"-"`` (stdout) is returned as it is.
    """
    path = os.fspath(path)
    if path == "-":
        return path
    target = _core.output_target(path)
    folder = os.path.dirname(target) or "."
    if not os.access(folder, os.W_OK | os.X_OK):
        via = path if target == path else f"{path} (a symbolic link to {target})"
        raise Error(f"{via}: the folder {folder} is not writable")
    return target


@contextlib.contextmanager
def atomic_output(path: Union[str, "os.PathLike[str]"], *, durable: bool = False) -> Iterator[str]:
    """Write a file by path, atomically, as models are written: yields the path to write.

    That is a temporary file beside the target (through symbolic links), with the
    mode the target will have; when the block ends normally it is renamed over
    the target (flushed to disk first with ``SVDISTILL_FSYNC=1`` or ``durable``,
    which checkpoints use: they exist to survive a crash), on any exception
    (Ctrl-C and SIGTERM included) removed. A device or FIFO (``/dev/null``)
    is written in place. The temporary is locked while written; temporaries for
    the same target that nobody holds (left by killed processes) are removed when
    the next one is created.
    """
    name = os.fspath(path)
    target, tmp, fd = _core.prepare_output(name)
    if tmp is None:
        yield target
        return
    try:
        yield tmp
    except BaseException:
        discard_output(tmp, fd)
        raise
    _core.commit_output(tmp, target, name, fd, durable)  # removes tmp and closes fd on failure


def discard_output(tmp: str, fd: int) -> None:
    """Removes an unfinished temporary of prepare_output, then lets go of its lock."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    with contextlib.suppress(OSError):
        os.close(fd)


def _is_gzip(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _open_reader(src: PathOrFile) -> "_core.Reader":
    if isinstance(src, (str, bytes, os.PathLike)):
        path = os.fsdecode(src)
        if not _core.have_zlib and path != "-" and _is_gzip(path):
            return _core.Reader(gzip.open(path, "rb"), path)
        return _core.Reader(path)
    if hasattr(src, "read"):
        name = getattr(src, "name", None)
        name = name if isinstance(name, str) else "<file>"
        if isinstance(src, _io.TextIOBase):
            raise Error(f"{name}: the file object is open in text mode; open it in binary mode ('rb')")
        if not _core.have_zlib:  # the core cannot inflate: let Python's gzip do it
            head = src.peek(2)[:2] if hasattr(src, "peek") else b""
            if not head and hasattr(src, "seekable") and src.seekable():
                pos = src.tell()
                head = src.read(2)
                src.seek(pos)
            if head == b"\x1f\x8b":
                src = gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[assignment]  # a binary file
        return _core.Reader(src, name)
    raise Error(f"expected a model: a path, '-' (stdin) or a binary file object, got {type(src).__name__}")


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
    if isinstance(model, (str, bytes, os.PathLike)) or not isinstance(model, Iterable):
        raise Error(f"write: expected a Model, a ComponentStream or an iterable of Components to write, "
                    f"got {type(model).__name__} (read a file first: svdistill.read(path))")
    check_write_options(binary, dialect, digits)
    target, name = _sink_of(dst)
    comps: Iterator[Component] = iter(model)
    first = next(comps, None)  # a stream knows its dialect after one component
    src_binary = getattr(model, "binary", False)
    src_dialect = getattr(model, "dialect", "kaldi")
    if binary is None:  # the source's encoding, unless the dialect asked for has only text
        binary = bool(src_binary) and dialect != "pdnn"
    binary = bool(binary)
    if dialect is None:
        dialect = "kaldi" if binary else src_dialect
    writer = _core.Writer(target, name, binary, dialect, digits)
    try:
        for i, c in enumerate(() if first is None else _chain(first, comps), 1):
            if not isinstance(c, Component):
                raise Error(f"write: item {i} of the model is a {type(c).__name__}, not a Component")
            writer.write(c._c)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    for note in writer.notes():
        warnings.warn(note, ConversionWarning, stacklevel=2)


def check_write_options(binary: Optional[bool], dialect: Optional[str], digits: str) -> None:
    """write()'s checks of its options, for callers that write after long work (distill) to
    run first. None (the source's encoding or dialect) always resolves to a valid pair."""
    if dialect is not None and dialect not in ("kaldi", "pdnn"):
        raise option_error("dialect", f"must be 'kaldi' or 'pdnn', got {dialect!r}")
    if digits not in ("shortest", "kaldi"):
        raise option_error("digits", f"must be 'shortest' or 'kaldi', got {digits!r}")
    if binary is not None and binary not in (True, False):
        raise option_error("binary", f"must be true or false, got {binary!r}")
    if dialect == "pdnn" and binary:
        raise option_error("dialect", "pdnn is text only: it cannot be written binary")


def _chain(first: Component, rest: Iterator[Component]) -> Iterator[Component]:
    yield first
    yield from rest


def _sink_of(dst: PathOrFile) -> Tuple[Union[str, IO[bytes]], str]:
    """(what the core writes to, the name its messages use) for write()'s ``dst``."""
    if isinstance(dst, (str, bytes, os.PathLike)):
        path = os.fsdecode(dst)
        return path, path
    if hasattr(dst, "write"):
        name = getattr(dst, "name", "<file>")
        name = name if isinstance(name, str) else "<file>"
        if isinstance(dst, _io.TextIOBase):
            raise Error(f"{name}: the file object is open in text mode; open it in binary mode ('wb')")
        return dst, name
    raise Error(f"write: expected the output as a path, '-' (stdout) or a binary file object, "
                f"got {type(dst).__name__}")
