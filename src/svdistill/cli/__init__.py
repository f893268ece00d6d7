"""The ``svdistill`` command line: thin wrappers over the Python API.

Options follow Kaldi's habits: ``--opt=value`` or ``--opt value``, booleans as
``--binary=true|false``, ``-`` for stdin/stdout.

Its parts: ``options`` (Kaldi-style options, flag names), ``parser`` (the commands'
arguments and help), ``commands`` (``cmd_NAME``: the API calls), ``checks`` (what is
checked before any work), ``exits`` (exit statuses, error messages, stop signals) and
``run`` (``main``).
"""
from .checks import _files_of as _files_of
from .commands import cmd_compare as cmd_compare
from .commands import cmd_compress as cmd_compress
from .commands import cmd_copy as cmd_copy
from .commands import cmd_distill as cmd_distill
from .commands import cmd_export as cmd_export
from .commands import cmd_forward as cmd_forward
from .commands import cmd_info as cmd_info
from .commands import cmd_specialists as cmd_specialists
from .commands import cmd_spectrum as cmd_spectrum
from .exits import DISTILL_STOPPED_EARLY as DISTILL_STOPPED_EARLY
from .exits import EXIT_READER_GONE as EXIT_READER_GONE
from .options import _defaults_of as _defaults_of
from .options import _flag_of as _flag_of
from .options import normalize_bools as normalize_bools
from .parser import build_parser as build_parser
from .parser import version_text as version_text
from .run import main as main
