"""Kaldi tables (archives and scp files), read and written as Kaldi's own tools do.

One place for every table svdistill touches (features, posteriors, alignments):

* :func:`read_table` yields ``(key, array)`` from an rspecifier (``ark:FILE``,
  ``scp:FILE``, ``ark:COMMAND |``, ``ark:-``; options such as ``ark,p:``). Any
  failure -- a truncated or damaged archive, a wrong scp offset, an unreadable
  file, a command that fails -- is one :class:`~svdistill.Error` naming the
  table, the utterance (the failing one when its key was read, and the last
  complete one) and the byte offset. Features are checked to be finite when
  read (Kaldi's nnet-forward stops on NaN/inf the same way).
* :class:`ScpTable` gives the entries of an scp file, each loaded on demand.
* :class:`TableWriter` writes ``ark:``/``ark,t:``/``ark,scp:`` outputs. A file
  output is written to a temporary file beside it and renamed into place when
  complete, so an error, Ctrl-C or SIGTERM never leaves a partial archive and an
  output may name its own input (as ``copy X X`` may). An output that would
  invalidate an input it is read from (an archive an input scp points into) is
  refused. Commands (``ark:| gzip -c > f.gz``) and stdout cannot be atomic; a
  command that fails is reported with its exit status.

Commands run through ``/bin/sh`` (as Kaldi's popen); their exit status is checked
when the table is closed, as Kaldi does. The matrix encodings are Kaldi's: binary
``FM``/``DM`` and compressed ``CM``/``CM2``/``CM3`` (decoded by kaldiio), text
``[ ... ]``; integer vectors (alignments) binary or text.

The package, by concept: :mod:`.specifiers` (rspecifiers, wspecifiers and the names in them),
:mod:`.commands` (exit statuses, stopping a command), :mod:`.inputs` and :mod:`.outputs` (the
bytes of a file, a standard stream or a command), :mod:`.matrices` (the encodings of an entry)
with :mod:`.text_numbers` (Kaldi's text numbers, strictly), :mod:`.faults` (how a damaged table
is reported), :mod:`.reading` and :mod:`.scp` (tables in), :mod:`.writing` (tables out).
"""
from __future__ import annotations

# The core as an attribute of this package: tests replace its commit_output to make a rename fail.
from .. import _core as _core
from .commands import describe_status
from .inputs import OpenInputs
from .matrices import check_finite
from .reading import read_table
from .scp import ScpTable, table_files
from .specifiers import RSPECIFIER_HELP, WSPECIFIER_HELP, RSpec, WSpec, output_files, parse_rspecifier, parse_wspecifier
from .specifiers import _is_std as _is_std
from .writing import TableWriter, write_table

__all__ = ["RSPECIFIER_HELP", "WSPECIFIER_HELP", "OpenInputs", "RSpec", "ScpTable", "TableWriter", "WSpec",
           "check_finite", "describe_status", "output_files", "parse_rspecifier", "parse_wspecifier",
           "read_table", "table_files", "write_table"]
