"""The ``svdistill`` command line: thin wrappers over the Python API.

Options follow Kaldi's habits: ``--opt=value`` or ``--opt value``, booleans as
``--binary=true|false``, ``-`` for stdin/stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import List, Optional, Tuple

from . import linalg
from ._core import Error
from .errors import option_text
from .info import format_info, info
from .io import ConversionWarning, atomic_output, iter_components, output_target, same_file, write

_TRUE = ("true", "t", "1", "yes")
_FALSE = ("false", "f", "0", "no")
_BOOL_FLAGS: set = set()


def _add_bool(p: "argparse._ActionsContainer", name: str, help: str, default=None) -> None:
    """A Kaldi-style boolean: ``--name``, ``--name=true|false`` or ``--name true|false``."""
    dest = name.lstrip("-").replace("-", "_")
    _BOOL_FLAGS.add(name)
    p.add_argument(name, dest=dest, action="store_true", default=default,
                   help=help + " (--%s[=true|false])" % name.lstrip("-"))
    p.add_argument("--no-" + name.lstrip("-"), dest=dest, action="store_false", help=argparse.SUPPRESS)


def _defaults_of(p: argparse.ArgumentParser, func) -> None:
    """The default of each option of ``p`` that is a keyword of ``func`` (the API function the
    command calls) is the keyword's: each default is declared once, in the API (whose own
    defaults come from the core's option structs where it has them). tests/test_options.py
    checks that every option is such a keyword, or a documented command-line-only one."""
    import inspect
    params = inspect.signature(func).parameters
    for action in p._actions:
        param = params.get(action.dest)
        if not action.option_strings or param is None or param.default is param.empty:
            continue
        hidden = action.help == argparse.SUPPRESS  # _add_bool's --no-NAME (store_false: default True)
        if not hidden and action.default is not None and action.default != param.default:
            raise AssertionError(f"{action.option_strings[0]}: default {action.default!r} here, "
                                 f"{param.default!r} in {func.__name__}(): declare it in the API only")
        action.default = param.default


def _add_forward_options(p: argparse.ArgumentParser) -> None:
    """nnet-forward's options, shared by forward and export (which writes forward as a file)."""
    p.add_argument("--feature-transform", metavar="FT", help="feature transform run first (frozen)")
    _add_bool(p, "--no-softmax", "drop a final Softmax/BlockSoftmax (pre-softmax outputs)")
    _add_bool(p, "--apply-log", "write log(posterior + 1e-20)")
    p.add_argument("--class-frame-counts", metavar="FILE",
                   help="subtract prior-scale x log priors from these counts (pseudo log-likelihoods)")
    p.add_argument("--prior-scale", type=float, help="default %(default)g")


def normalize_bools(argv: List[str]) -> List[str]:
    """Rewrites ``--flag=false`` / ``--flag false`` into the forms argparse knows."""
    out: List[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in _BOOL_FLAGS:
            if not eq and i + 1 < len(argv) and argv[i + 1].lower() in _TRUE + _FALSE:
                val, eq = argv[i + 1], "="
                i += 1
            if eq:
                v = val.strip().lower()
                if v not in _TRUE + _FALSE:
                    print(f"svdistill: error: {name} expects true or false, got {val!r}", file=sys.stderr)
                    raise SystemExit(2)
                a = name if v in _TRUE else "--no-" + name[2:]
        out.append(a)
        i += 1
    return out


def cmd_info(a: argparse.Namespace) -> int:
    d = info(a.model)
    if a.json:
        sys.stdout.write(json.dumps(_json_safe(d), indent=1) + "\n")
    else:
        sys.stdout.write(format_info(d))
    return 0


def _json_safe(x):
    """JSON has no NaN: statistics of constant vectors become null."""
    if isinstance(x, float):
        return None if x != x or x in (float("inf"), float("-inf")) else x
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def cmd_copy(a: argparse.Namespace) -> int:
    write(iter_components(a.input), a.output, binary=a.binary, dialect=a.dialect, digits=a.digits)
    return 0


def _ints(text: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _write_json(path: str, obj) -> None:
    """A JSON file, written as models are (atomically, through symbolic links, the usual mode)."""
    text = json.dumps(_json_safe(obj), indent=1) + "\n"
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def cmd_compress(a: argparse.Namespace) -> int:
    from .compress import compress
    if a.check and (a.input == "-" or a.output == "-"):
        raise Error("--check needs MODEL_IN and MODEL_OUT to be files, not '-'")
    if a.feature_transform and not a.check and not a.calibration:
        raise Error("--feature-transform is the feature transform of --calibration and --check, and neither "
                    "was given: give one of them too, or leave it out")
    for flag, spec in (("--check", a.check), ("--calibration", a.calibration)):
        if spec:
            from .archive import parse_rspecifier
            try:
                parse_rspecifier(spec)  # a bad rspecifier is said now, not after the compression
            except Error as e:
                raise Error(f"{flag} {e}") from None
    if a.threads:
        linalg.set_num_threads(a.threads)
    if a.plot:
        _require_matplotlib()  # before the compression, not after it
    _, report = compress(
        a.input, rank=a.rank, ranks=a.ranks, rank_fraction=a.rank_fraction, energy=a.energy,
        nuclear=a.nuclear, param_budget=a.param_budget, min_gain=a.min_gain, round_to=a.round_to,
        layers=a.layers, skip_output_layer=a.skip_output_layer, split=a.split, method=a.method,
        oversamples=a.oversamples, n_iter=a.n_iter, seed=a.seed, output=a.output,
        binary=a.binary, dialect=a.dialect, digits=a.digits, spectra=bool(a.plot),
        calibration=a.calibration, feature_transform=a.feature_transform if a.calibration else None,
        calibration_frames=a.calibration_frames, refine=a.refine)
    print(report.format_table(), file=sys.stderr)
    check = None
    if a.check:
        from .compare import compare, format_compare
        try:
            check = compare(a.input, a.output, a.check, feature_transform=a.feature_transform)
        except Error as e:
            unwritten = " and ".join(f for f, v in (("--report", a.report), ("--plot", a.plot)) if v)
            e.cli_context = (f"MODEL_OUT {a.output} was written{f' ({unwritten} not)' if unwritten else ''}; "  # type: ignore[attr-defined]  # noqa: E501
                             "the check failed: ")
            raise
        print("fidelity on " + a.check + ":\n" + format_compare(check), file=sys.stderr)
    if a.report:
        d = report.to_dict()
        if check is not None:
            d["check"] = check
        _write_json(a.report, d)
    if a.plot:
        from .plot import plot_spectra
        layers = [{"index": L.index, "out": L.out, "in": L.inp, "singular_values": report.spectra[L.index]}
                  for L in report.layers]
        plot_spectra(layers, a.plot, {L.index: L.rank for L in report.layers})
    return 0


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Error("--plot needs matplotlib: pip install 'svdistill[plot]'") from None


def cmd_spectrum(a: argparse.Namespace) -> int:
    from .spectrum import format_spectrum, spectrum
    if a.threads:
        linalg.set_num_threads(a.threads)
    if a.plot:
        _require_matplotlib()
    if a.feature_transform and not a.calibration:
        raise Error("--feature-transform is the feature transform of --calibration, and no --calibration "
                    "was given: give --calibration FEATS_RSPECIFIER too, or leave it out")
    d = spectrum(a.model, layers=a.layers, calibration=a.calibration,
                 feature_transform=a.feature_transform if a.calibration else None,
                 calibration_frames=a.calibration_frames)
    if a.json:
        sys.stdout.write(json.dumps(_json_safe(d), indent=1) + "\n")
    else:
        print(format_spectrum(d))
    if a.plot:
        from .plot import plot_spectra
        plot_spectra(d["layers"], a.plot)
    return 0


def cmd_forward(a: argparse.Namespace) -> int:
    from .forward import forward_archive
    from .progress import Progress
    if a.threads:
        linalg.set_num_threads(a.threads)
    with Progress("forward", unit="frames") as bar:  # closed (line cleared) before any error message
        n_utt, n_frames = forward_archive(
            a.model, a.feats, a.output, feature_transform=a.feature_transform, no_softmax=a.no_softmax,
            apply_log=a.apply_log, class_frame_counts=a.class_frame_counts, prior_scale=a.prior_scale,
            progress=lambda utts, frames: bar.update(frames, f"{utts:,} utterance{'s' if utts != 1 else ''}"))
    print(f"svdistill forward: {n_utt} utterance{'s' if n_utt != 1 else ''}, {n_frames} frames", file=sys.stderr)
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from .compare import compare, format_compare
    if a.threads:
        linalg.set_num_threads(a.threads)
    d = compare(a.teacher, a.student, a.feats, feature_transform=a.feature_transform)
    if a.json:
        sys.stdout.write(json.dumps(_json_safe(d), indent=1) + "\n")
    else:
        print(format_compare(d))
    return 0


def _check_output_path(opt: str, path: Optional[str]) -> None:
    """Fail before hours of work, not after: the output's folder must exist and be writable,
    the output must not be a folder or a symbolic-link loop."""
    if path and path != "-":
        try:
            output_target(path)
        except Error as e:
            raise Error(f"{opt} {e}") from None


#: The exit status of a distill that stopped early but wrote the best model of the epochs before.
DISTILL_STOPPED_EARLY = 3
#: The exit status when the reader of standard output goes away ('| head'): the command stops
#: quietly, as a Unix tool killed by SIGPIPE does, with the status a shell reports for that.
EXIT_READER_GONE = 128 + 13


def cmd_distill(a: argparse.Namespace) -> int:
    from .distill import TrainingStopped, distill
    # STUDENT_OUT and --report were checked by _check_outputs (writable, not an input).
    if a.threads:
        linalg.set_num_threads(a.threads)
        if a.engine == "torch" or (a.device or "").startswith("cuda"):
            import torch
            torch.set_num_threads(a.threads)
    from .distill.distributed import Dist
    dist = Dist.from_env()
    writer = dist is None or dist.is_writer
    try:
        _, report = distill(
            a.student, a.feats, teacher=a.teacher, feature_transform=a.feature_transform,
            temperature=a.temperature, labels=a.labels, hard_weight=a.hard_weight,
            average_logits=a.average_logits, optimizer=a.optimizer, learn_rate=a.learn_rate,
            momentum=a.momentum, l2_penalty=a.l2_penalty, minibatch_size=a.minibatch_size,
            randomizer_size=a.randomizer_size, max_epochs=a.max_epochs, min_epochs=a.min_epochs,
            keep_lr_epochs=a.keep_lr_epochs, start_halving_impr=a.start_halving_impr,
            end_halving_impr=a.end_halving_impr, halving_factor=a.halving_factor, cv_feats=a.cv_feats,
            cv_labels=a.cv_labels, cv_fraction=a.cv_fraction, seed=a.seed, output=a.output,
            binary=a.binary, dialect=a.dialect, digits=a.digits,
            engine=a.engine, device=a.device, precision=a.precision, checkpoint_dir=a.checkpoint_dir,
            checkpoint_every=a.checkpoint_every, resume=a.resume,
            log=lambda line: print(line, file=sys.stderr, flush=True))
    except TrainingStopped as e:  # the best model so far is written; _run says so
        if a.report and writer:
            _write_json(a.report, e.report.to_dict())
        raise
    if a.report and writer:
        _write_json(a.report, report.to_dict())
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export
    d = export(a.model, a.output, format=a.format, feature_transform=a.feature_transform,
               no_softmax=a.no_softmax, apply_log=a.apply_log, class_frame_counts=a.class_frame_counts,
               prior_scale=a.prior_scale, opset=a.opset)
    fmt = d["format"] + (f" (opset {d['opset']})" if d["opset"] else "")
    print(f"svdistill export: {fmt}, feats frames x {d['input_dim']} -> out frames x {d['output_dim']} "
          f"({d['output_kind']}), {d['bytes']:,} bytes: {d['path']}", file=sys.stderr)
    return 0


def version_text() -> str:
    """``svdistill --version``: the version and the core's build facts (svdistill.build_info())."""
    from . import build_info
    b = build_info()
    x86 = b["arch"] == "x86_64"
    simd = {"x86-64-v3": "x86-64-v3 (AVX2 + FMA)",
            "baseline": "baseline x86-64 (SSE2)" if x86 else f"baseline ({b['arch']})"}[b["simd"]]
    if b["simd_forced_portable"]:
        simd += ", forced by SVDISTILL_PORTABLE"
    elif b["simd"] == "baseline" and x86:
        simd += (", the CPU lacks x86-64-v3" if "x86-64-v3" in b["simd_built"]
                 else ", the only path built (SVD_NO_MULTIVERSION)")
    built = f"built: {', '.join(b['simd_built'])}"
    if x86:
        cpu = [n for n, has in (("x86-64-v3", b["cpu_x86_64_v3"]), ("AVX-512F", b["cpu_avx512f"])) if has]
        built += f"; CPU: {', '.join(cpu) or 'baseline only'}"
        if b["cpu_avx512f"]:
            built += "; AVX-512 is not used by the core"
    zlib = f"yes ({b['zlib_version']})" if b["zlib"] else "no (gzip read through Python)"
    return "\n".join([
        f"svdistill {b['version']}",
        f"  compiler  {b['compiler']}, {b['cxx_standard']}, {b['build_type']} build, {b['arch']}",
        f"  BLAS      {b['blas_package']}: {b['blas_config']}",
        f"            kernel {b['blas_corename']}, {b['blas_threads']} threads ({b['blas_threading']})",
        f"  threads   {b['threads']}",
        f"  zlib      {zlib}",
        f"  SIMD      {simd}",
        f"            {built}",
    ])


class _VersionAction(argparse.Action):
    """--version: prints version_text() to stdout and exits 0."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version and the core's build facts (compiler, BLAS, SIMD paths) and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from ._core import OptimizerOptions
    from .compare import compare
    from .compress import compress
    from .distill import distill
    from .distill.engine import as_written
    from .export import export
    from .forward import forward_archive
    from .spectrum import spectrum
    p = argparse.ArgumentParser(
        prog="svdistill",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make large Kaldi nnet1 acoustic models small: inspect and convert models\n"
                    "(Kaldi text, Kaldi binary, PDNN-style text), restructure them by truncated\n"
                    "SVD, run and compare them as nnet-forward does, and recover accuracy by\n"
                    "knowledge distillation.",
        epilog="Run 'svdistill COMMAND --help' for a command's options.\n\n"
               "environment:\n"
               "  SVDISTILL_NUM_THREADS=N  threads of the core (default: all cores)\n"
               "  SVDISTILL_FSYNC=1        flush outputs to disk before the rename\n"
               "  SVDISTILL_HUGEPAGES=0    no transparent-huge-page advice for weight blocks\n\n"
               "exit status:\n"
               "  0              done\n"
               "  2              an error, said on one line 'svdistill: error: ...'; outputs not\n"
               "                 written (a failed compress --check says what was)\n"
               f"  {DISTILL_STOPPED_EARLY}              distill stopped early, the best model so far written\n"
               "  129, 130, 143  SIGHUP, Ctrl-C (SIGINT), SIGTERM: unfinished outputs removed\n"
               f"  {EXIT_READER_GONE}            the reader of standard output went away (e.g. '| head'): the\n"
               "                 command stops quietly, as Unix tools do; a closed stdout ('>&-')\n"
               "                 is an error")
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    pi = sub.add_parser("info", help="what nnet-info prints: dims, parameter counts and statistics",
                        description="Print what Kaldi's nnet-info prints for MODEL (any dialect; "
                                    "'-' reads stdin; gzip is detected).")
    pi.add_argument("model", metavar="MODEL")
    _add_bool(pi, "--json", "machine-readable JSON instead of nnet-info's text", default=False)
    pi.set_defaults(func=cmd_info)

    pc = sub.add_parser("copy", help="copy or convert a model (nnet-copy)",
                        description="Copy MODEL_IN to MODEL_OUT, converting encoding or dialect. "
                                    "The output appears atomically when complete; copying a "
                                    "file onto itself is safe.")
    pc.add_argument("input", metavar="MODEL_IN")
    pc.add_argument("output", metavar="MODEL_OUT")
    _add_bool(pc, "--binary", "write Kaldi binary (default: the input's encoding)")
    pc.add_argument("--dialect", choices=["kaldi", "pdnn"],
                    help="text dialect to write (default: the input's)")
    pc.add_argument("--digits", choices=["shortest", "kaldi"],
                    help="text numbers: 'shortest' round-trips float32 exactly; 'kaldi' writes "
                         "nnet-copy's 7 significant digits byte for byte (default %(default)s)")
    pc.set_defaults(func=cmd_copy)
    _defaults_of(pc, write)

    pz = sub.add_parser(
        "compress", help="replace affine layers by truncated-SVD factor pairs",
        description="Replace each selected <AffineTransform> W (out x in) by a k x in "
                    "<LinearTransform> and an out x k <AffineTransform> that keeps the bias "
                    "(Xue, Li & Gong 2013). Give exactly one rank policy. The per-layer table "
                    "goes to stderr; MODEL_OUT appears atomically when complete.",
        epilog="Exit status: 0 done; 2 an error: nothing written, except when --check fails after "
               "MODEL_OUT was written (the error says 'MODEL_OUT ... was written; the check failed: ...', "
               "and --report and --plot are not written).")
    pz.add_argument("input", metavar="MODEL_IN")
    pz.add_argument("output", metavar="MODEL_OUT")
    g = pz.add_argument_group("rank policy (exactly one)")
    g.add_argument("--rank", type=int, help="the same rank K for every selected layer")
    g.add_argument("--ranks", type=_ints, metavar="K1,K2,...", help="one rank per selected layer")
    g.add_argument("--rank-fraction", type=float, metavar="F", help="rank = round(F x min(out, in))")
    g.add_argument("--energy", type=float, metavar="E",
                   help="a rank whose factors keep at least E of sum(s^2) (computed exactly): with "
                        "--method exact the smallest such rank, from the full spectrum (as 'svdistill "
                        "spectrum' shows it); otherwise an adaptive randomized sketch grows until it "
                        "keeps E, and its rank is never below the smallest and may be a little above")
    g.add_argument("--nuclear", type=float, metavar="N",
                   help="smallest rank keeping N of sum(s), from the full spectrum")
    g.add_argument("--param-budget", type=float, metavar="F",
                   help="whole model <= F x its parameters, ranks minimising the total squared "
                        "Frobenius error (two passes)")
    g = pz.add_argument_group("modifiers")
    g.add_argument("--min-gain", type=float, metavar="G",
                   help="factor a layer only if it keeps at most (1-G) of its weights (default 0: "
                        "any saving)")
    g.add_argument("--round-to", type=int, metavar="M", help="round ranks up to a multiple of M")
    g.add_argument("--layers", metavar="SPEC",
                   help="1-based component indices as nnet-info numbers them, e.g. 1,3-6: a single "
                        "index must name an AffineTransform, a range selects those inside it "
                        "(default: every AffineTransform)")
    _add_bool(g, "--skip-output-layer", "leave the last AffineTransform unchanged")
    g.add_argument("--split", choices=["sqrt", "left", "right"],
                   help="where the singular values go: sqrt on both factors (default), left (the "
                        "out x k factor) or right (the k x in factor)")
    g = pz.add_argument_group("SVD")
    g.add_argument("--method", choices=["auto", "randomized", "exact"],
                   help="auto: randomized unless the sketch would cover half of min(out, in)")
    g.add_argument("--oversamples", type=int, metavar="P",
                   help="randomized sketch oversampling (default max(32, k/4))")
    g.add_argument("--n-iter", type=int, metavar="Q",
                   help="randomized power iterations (default 2)")
    g.add_argument("--seed", type=int,
                   help="random seed (identical results for a seed and thread count)")
    g.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    g = pz.add_argument_group("output")
    _add_bool(g, "--binary", "write Kaldi binary (default: the input's encoding)")
    g.add_argument("--dialect", choices=["kaldi", "pdnn"])
    g.add_argument("--digits", choices=["shortest", "kaldi"])
    g.add_argument("--report", metavar="FILE.json", help="write the report as JSON")
    g.add_argument("--plot", metavar="FILE.png",
                   help="plot the spectra with the chosen ranks (needs svdistill[plot])")
    g.add_argument("--check", metavar="FEATS_RSPECIFIER",
                   help="afterwards, compare the output with the input on these features "
                        "(as 'svdistill compare'); MODEL_OUT must be a file")
    g = pz.add_argument_group("calibration (data-aware truncation)")
    g.add_argument("--calibration", metavar="FEATS_RSPECIFIER",
                   help="factor each layer to minimise its output error on these features (whitened SVD; "
                        "the bias keeps the mean output); the policies then count output energy, and "
                        "--param-budget compares layers by the model's measured output loss")
    g.add_argument("--calibration-frames", type=int, metavar="N",
                   help="frames of --calibration used, from its start (default %(default)s)")
    _add_bool(g, "--refine", "one more pass over --calibration refits each factored layer's out x k factor "
                             "and bias (least squares) to the input model's outputs on the student's own "
                             "inputs")
    g.add_argument("--feature-transform", metavar="FT",
                   help="feature transform run first on the --calibration and --check features")
    pz.set_defaults(func=cmd_compress)
    _defaults_of(pz, compress)

    ps = sub.add_parser("spectrum", help="singular values per layer and the ranks they imply",
                        description="For each affine layer of MODEL: the ranks needed to keep "
                                    "50/80/90/95/99%% of the energy (sum of s^2), and the "
                                    "break-even rank. Writes no model.")
    ps.add_argument("model", metavar="MODEL")
    _add_bool(ps, "--json", "JSON with all singular values", default=False)
    ps.add_argument("--plot", metavar="FILE.png", help="plot the spectra (needs svdistill[plot])")
    ps.add_argument("--layers", metavar="SPEC",
                    help="component indices as for compress, e.g. 1,3-6 (default: every affine layer)")
    ps.add_argument("--threads", type=int, default=0)
    ps.add_argument("--calibration", metavar="FEATS_RSPECIFIER",
                    help="whitened spectra: singular values of W R^T for these features' input "
                         "covariance at each layer (output energies, as compress --calibration counts them)")
    ps.add_argument("--calibration-frames", type=int, metavar="N",
                    help="frames of --calibration used, from its start (default %(default)s)")
    ps.add_argument("--feature-transform", metavar="FT", help="feature transform run first on --calibration")
    ps.set_defaults(func=cmd_spectrum)
    _defaults_of(ps, spectrum)

    pf = sub.add_parser("forward", help="nnet-forward: run a model over a feature archive",
                        description="Run MODEL over every utterance of FEATS_RSPECIFIER and write the "
                                    "outputs to OUT_WSPECIFIER (Kaldi rspecifiers/wspecifiers: ark:, "
                                    "scp:, ark,t:, ark,scp:, pipes, -). Outputs match nnet-forward's.")
    pf.add_argument("model", metavar="MODEL")
    pf.add_argument("feats", metavar="FEATS_RSPECIFIER")
    pf.add_argument("output", metavar="OUT_WSPECIFIER")
    _add_forward_options(pf)
    pf.add_argument("--threads", type=int, default=0)
    pf.set_defaults(func=cmd_forward)
    _defaults_of(pf, forward_archive)

    pm = sub.add_parser("compare", help="teacher-vs-student fidelity on a feature archive",
                        description="Top-1 agreement, mean KL(teacher || student), cross-entropy, the "
                                    "largest posterior difference and parameter counts, over every "
                                    "frame of FEATS_RSPECIFIER.")
    pm.add_argument("teacher", metavar="TEACHER")
    pm.add_argument("student", metavar="STUDENT")
    pm.add_argument("feats", metavar="FEATS_RSPECIFIER")
    pm.add_argument("--feature-transform", metavar="FT")
    _add_bool(pm, "--json", "JSON instead of a table", default=False)
    pm.add_argument("--threads", type=int, default=0)
    pm.set_defaults(func=cmd_compare)
    _defaults_of(pm, compare)

    pd = sub.add_parser(
        "distill", help="fine-tune a student on teachers' soft targets (or on labels)",
        description="Knowledge distillation (Hinton, Vinyals & Dean 2015): train STUDENT_IN on the "
                    "soft targets of the --teacher models at --temperature T (cross-entropy scaled "
                    "by T^2), optionally mixed with --labels; without --teacher, frame-level "
                    "cross-entropy training on --labels as nnet-train-frmshuff does it. Frames are "
                    "shuffled through a bounded buffer; every epoch ends with a cross-validation "
                    "pass; the learning rate follows Kaldi's newbob schedule; the best model is "
                    "written to STUDENT_OUT (atomically; encoding and dialect of STUDENT_IN). The "
                    "per-epoch table goes to stderr.",
        epilog="Example: svdistill distill --teacher final.nnet --feature-transform "
               "final.feature_transform student.nnet scp:train.scp student.kd.nnet. "
               "Exit status: 0 trained to the end of the schedule, STUDENT_OUT written; 2 an error, "
               "nothing written; " f"{DISTILL_STOPPED_EARLY}" " training stopped early (it diverged at "
               "every learning rate tried, or the data failed in a later epoch), the best model so far "
               "written, the last line says why and which epoch it is; 129 hangup (SIGHUP), 130 "
               "interrupted (Ctrl-C), 143 terminated (SIGTERM), the best model of the finished epochs "
               "written if one improved.")
    pd.add_argument("student", metavar="STUDENT_IN")
    pd.add_argument("feats", metavar="FEATS_RSPECIFIER",
                    help="training features (read once per epoch: a file, an scp or 'ark:cmd |', not stdin)")
    pd.add_argument("output", metavar="STUDENT_OUT")
    g = pd.add_argument_group("targets")
    g.add_argument("--teacher", action="append", metavar="MODEL",
                   help="teacher model (repeat for an ensemble: soft targets are averaged)")
    g.add_argument("--feature-transform", metavar="FT",
                   help="feature transform run first, frozen, for teachers and student (splicing goes here)")
    g.add_argument("--temperature", type=float, metavar="T",
                   help="softmax temperature of the soft targets (default %(default)g)")
    _add_bool(g, "--average-logits", "several teachers: average logits instead of soft targets")
    g.add_argument("--labels", metavar="ALI_RSPECIFIER",
                   help="pdf-id alignments (e.g. 'ark:ali-to-pdf final.mdl \"ark:gunzip -c ali.*.gz|\" ark:- |')")
    g.add_argument("--hard-weight", type=float, metavar="A",
                   help="loss = (1-A) T^2 CE(soft) + A CE(labels); default 0.1 with --labels and "
                        "--teacher, 1 with --labels only")
    g = pd.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["sgd", "adam"],
                   help="sgd: Kaldi's semantics (summed gradients, learn-rate coefficients, "
                        "momentum, l2, MaxNorm); adam: mean gradients, l2 as weight decay")
    sgd_rate, adam_rate = (as_written(r) for r in (OptimizerOptions().learn_rate, OptimizerOptions.adam_learn_rate))
    g.add_argument("--learn-rate", type=float,
                   help=f"initial learning rate (default {sgd_rate:g} for sgd, as Kaldi; {adam_rate:g} for adam)")
    g.add_argument("--momentum", type=float, help="sgd momentum (default %(default)g)")
    g.add_argument("--l2-penalty", type=float,
                   help="sgd: Kaldi's l2-penalty; adam: decoupled weight decay (default %(default)g)")
    g.add_argument("--minibatch-size", type=int, help="frames per update (default %(default)s)")
    g.add_argument("--randomizer-size", type=int, help="frames in the shuffling buffer (default %(default)s)")
    g.add_argument("--seed", "--randomizer-seed", type=int, dest="seed",
                   help="shuffling seed (default %(default)s; same seed, data and threads: same model)")
    g.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    g = pd.add_argument_group("engine")
    g.add_argument("--engine", choices=["core", "torch"],
                   help="core: the C++ trainer (default on the CPU); torch: PyTorch (needs "
                        "svdistill[torch]; implied by --device cuda)")
    g.add_argument("--device", metavar="cpu|cuda|cuda:N",
                   help="where the torch engine trains (default cpu; cuda implies --engine torch)")
    g.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="torch engine on CUDA: matmul precision (tf32) or bf16 autocast; "
                        "fp32 (default) is the only choice on the CPU")
    g = pd.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="save the run's state there after every epoch (atomically; the two newest kept)")
    g.add_argument("--checkpoint-every", type=int, metavar="FRAMES",
                   help="also save every FRAMES training frames within an epoch (default: only after epochs)")
    _add_bool(g, "--resume", "continue from the newest checkpoint in --checkpoint-dir (same options and "
                             "data; --max-epochs may differ)")
    g = pd.add_argument_group("schedule (Kaldi's newbob, steps/nnet/train_scheduler.sh)")
    g.add_argument("--max-epochs", type=int, help="default %(default)s")
    g.add_argument("--min-epochs", type=int, help="train at least this many epochs (default %(default)s)")
    g.add_argument("--keep-lr-epochs", type=int,
                   help="epochs at the initial learning rate, none rejected (default %(default)s)")
    g.add_argument("--start-halving-impr", type=float,
                   help="start halving when the relative CV improvement falls below this (default %(default)g)")
    g.add_argument("--end-halving-impr", type=float,
                   help="stop when, while halving, it falls below this (default %(default)g)")
    g.add_argument("--halving-factor", type=float, help="default %(default)g")
    g = pd.add_argument_group("cross-validation")
    g.add_argument("--cv-feats", metavar="RSPECIFIER", help="held-out features (default: a part of the training data)")
    g.add_argument("--cv-labels", metavar="ALI_RSPECIFIER",
                   help="labels of --cv-feats (default: --labels); with --teacher and no --labels they "
                        "give the CV accuracy only")
    g.add_argument("--cv-fraction", type=float,
                   help="without --cv-feats: hold out this fraction of the utterances (by key hash; "
                        "default 0.1); refused with --cv-feats")
    g = pd.add_argument_group("output")
    _add_bool(g, "--binary", "write Kaldi binary (default: the student's encoding)")
    g.add_argument("--dialect", choices=["kaldi", "pdnn"])
    g.add_argument("--digits", choices=["shortest", "kaldi"])
    g.add_argument("--report", metavar="FILE.json", help="write the per-epoch table as JSON")
    pd.set_defaults(func=cmd_distill)
    _defaults_of(pd, distill)

    px = sub.add_parser(
        "export", help="write a model (with nnet-forward's options) as ONNX or TorchScript",
        description="Write MODEL, with the feature transform run first and nnet-forward's output "
                    "options, as one ONNX or TorchScript graph: input 'feats' (frames x dims "
                    "float32, one whole utterance per call: Splice repeats its first and last "
                    "frame), output 'out' (frames x outputs), the frame axis dynamic. OUT appears "
                    "atomically when complete. Needs svdistill[torch] (and onnx for ONNX).")
    px.add_argument("model", metavar="MODEL")
    px.add_argument("output", metavar="OUT")
    px.add_argument("--format", choices=["onnx", "torchscript"],
                    help="onnx (default; PyTorch's TorchScript-based exporter) or torchscript "
                         "(torch.jit.load reads it)")
    px.add_argument("--opset", type=int, metavar="N",
                    help="ONNX opset version (default: PyTorch's)")
    _add_forward_options(px)
    px.set_defaults(func=cmd_export)
    _defaults_of(px, export)
    return p


def _flag_of(parser: argparse.ArgumentParser, command: str, keyword: str) -> str:
    """How ``command``'s help names what sets ``keyword``: an API keyword or an argparse
    dest (--flag, or METAVAR for a positional argument): the same name, as every flag is its
    API keyword with dashes (tests/test_options.py)."""
    dest = keyword
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if action.dest == dest and action.help != argparse.SUPPRESS:
            if action.option_strings:
                return action.option_strings[0]
            return action.metavar or dest.upper()
    return keyword


# Arguments naming files a command reads: model paths, and rspecifiers.
_INPUTS = ("input", "model", "student", "teacher", "feature_transform", "class_frame_counts",
           "calibration",
           "feats", "check", "labels", "cv_feats", "cv_labels")
# Those of them that are Kaldi rspecifiers.
_RSPECIFIERS = ("feats", "check", "labels", "cv_feats", "cv_labels", "calibration")
# Files a command writes (forward's output is a wspecifier: see _files_of).
_OUTPUTS = ("output", "report", "plot")
# Model outputs that may be their input: the input is read in full, or streamed
# from a descriptor that the atomic rename leaves intact ('copy X X').
_MAY_REPLACE = {"copy": ("input",), "compress": ("input",), "distill": ("student",)}
# Pairs the API itself refuses (in its own words): not checked twice.
_API_CHECKED = {"export": ("model", "feature_transform")}


def _files_of(value: str, specifier: str = "") -> List[Tuple[str, bool]]:
    """The plain files an argument names, each with whether it is read only through an scp:
    a path, or the files a Kaldi ``specifier`` ("r" or "w") reads or writes -- for an input
    scp, the scp and every archive its lines point into. None for pipes and '-' (nor for a
    specifier that is not valid: the command itself says why)."""
    if not value or value == "-":
        return []
    if not specifier:
        return [(value, False)]
    from .archive import output_files, table_files
    try:
        if specifier == "w":
            return [(f, False) for f in output_files(value)]
        direct, behind = table_files(value)
    except Error:
        return []
    return [(f, False) for f in sorted(direct)] + [(f, True) for f in sorted(behind - direct)]


def _check_outputs(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Before any work: every output can be written, and none is an input or another output."""
    import os
    cmd = a.command
    outputs = []  # (name, path as given, file)
    for dest in _OUTPUTS:
        value = getattr(a, dest, None)
        if not value:
            continue
        name = _flag_of(parser, cmd, dest)
        if cmd == "forward" and dest == "output":  # an archive (and its scp): its writer checks them
            outputs += [(name, value, f) for f, _ in _files_of(value, "w")]
            continue
        if value != "-":
            _check_output_path(name, value)
            outputs.append((name, value, value))
    inputs = []
    for dest in _INPUTS:
        values = getattr(a, dest, None)
        for v in ([] if values is None else values if isinstance(values, list) else [values]):
            spec = "r" if dest in _RSPECIFIERS else ""
            inputs += [(dest, v, f, behind) for f, behind in _files_of(v, spec)]

    def where(path: str) -> str:
        try:
            return os.path.realpath(output_target(path))
        except Error:
            return os.path.realpath(path)

    for i, (name, value, f) in enumerate(outputs):
        for dest, v, g, behind in inputs:
            if cmd == "forward" and dest == "feats":
                continue  # output archive = input archive: forward's own writer decides
            if name == _flag_of(parser, cmd, "output") and dest in _API_CHECKED.get(cmd, ()):
                continue
            replaceable = dest in _MAY_REPLACE.get(cmd, ()) and name == _flag_of(parser, cmd, "output")
            if replaceable and same_file(f, g) and getattr(a, "check", None):
                raise Error(f"{name} {value} is {_flag_of(parser, cmd, dest)}: --check would compare the "
                            f"output with itself; write it to another file")
            if replaceable:
                continue
            if same_file(f, g) and behind:
                raise Error(f"{name} {value} is an archive that {_flag_of(parser, cmd, dest)} {v} reads from: "
                            f"refusing to overwrite an input")
            if same_file(f, g):
                raise Error(f"{name} {value} is the same file as {_flag_of(parser, cmd, dest)} {v}: "
                            f"refusing to overwrite an input")
        for other, ovalue, g in outputs[:i]:
            if other != name and where(f) == where(g):  # (an archive and its scp: the writer's check)
                raise Error(f"{name} {value} and {other} {ovalue} are the same file: give each output its own")


# Signals that end the process the way Ctrl-C does (cleanup, distill's best
# model), with the exit status a shell reports for them (128 + signal).
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")
_caught: List[int] = []


def _on_stop_signal(signum, frame) -> None:
    import os
    import signal
    if _caught:  # asked again while cleaning up: stop at once, as the signal's default does
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _caught.append(signum)
    raise KeyboardInterrupt


def _install_stop_handlers() -> dict:
    """SIGTERM/SIGHUP raise KeyboardInterrupt in the main thread (signals left ignored,
    as by nohup, stay ignored). Returns the previous handlers."""
    import signal
    _caught.clear()
    previous = {}
    for name in _STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue
            previous[sig] = signal.signal(sig, _on_stop_signal)
        except ValueError:  # not the main thread: signals cannot be handled here
            break
    return previous


def _restore_handlers(previous: dict) -> None:
    import signal
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(normalize_bools(list(sys.argv[1:] if argv is None else argv)))
    previous = _install_stop_handlers()
    try:
        return _run(parser, a)
    finally:
        _restore_handlers(previous)


def _error_text(parser: argparse.ArgumentParser, command: str, e: Error) -> str:
    """An Error as one line of the command's words: an API keyword said as its flag."""
    text = str(e)
    if getattr(e, "option", None):
        text = option_text(e, lambda keyword: _flag_of(parser, command, keyword))
    text = getattr(e, "cli_context", "") + text  # what the command had done before e
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _stdout_user(parser: argparse.ArgumentParser, a: argparse.Namespace) -> Optional[str]:
    """What of this command writes to standard output (as its help names it), or None."""
    if a.command in ("info", "spectrum", "compare"):
        return f"'svdistill {a.command}'"
    out = getattr(a, "output", None)
    if a.command == "forward":
        from .archive import _is_std, parse_wspecifier
        try:
            to_stdout = _is_std(parse_wspecifier(a.output).ark)  # forward's OUT_WSPECIFIER: required
        except Error:
            return None
        return f"{_flag_of(parser, a.command, 'output')} {out}" if to_stdout else None
    return f"{_flag_of(parser, a.command, 'output')} '-'" if out == "-" else None


def _closed(fd: int) -> bool:
    import os
    try:
        os.fstat(fd)
        return False
    except OSError:
        return True


def _reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (poll says POLLERR)."""
    import select
    try:
        p = select.poll()
        p.register(1, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in p.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _stdin_user(parser: argparse.ArgumentParser, a: argparse.Namespace) -> Optional[str]:
    """Which argument of this command reads standard input (as its help names it), or None.
    Two that would both read it are an error: the first would take all of it."""
    users = _stdin_users(parser, a)
    if len(users) > 1:
        raise Error(f"{users[0]} and {users[1]} both read standard input; one stream cannot feed both: "
                    "give one of them a file")
    return users[0] if users else None


def _stdin_users(parser: argparse.ArgumentParser, a: argparse.Namespace) -> List[str]:
    from .archive import _is_std, parse_rspecifier
    users = []
    for dest in _INPUTS:
        values = getattr(a, dest, None)
        for v in ([] if values is None else values if isinstance(values, list) else [values]):
            if dest in _RSPECIFIERS:
                try:
                    if not _is_std(parse_rspecifier(v).name):
                        continue
                except Error:
                    continue
            elif v != "-":
                continue
            users.append(f"{_flag_of(parser, a.command, dest)} {v}")
    return users


def _check_std_streams(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """A closed standard input or output ('<&-', '>&-') is an error when the command uses it.
    Either way the descriptor is held by /dev/null, so that no file the command opens becomes
    descriptor 0 or 1 (where anything printed would land in it)."""
    import os
    for fd, mode, flags, attr, user, message in (
            (0, "r", os.O_RDONLY, "stdin", _stdin_user,
             "standard input is closed, and {} reads from it: give it a file or a pipe"),
            (1, "w", os.O_WRONLY, "stdout", _stdout_user,
             "standard output is closed, and {} writes to it: redirect it to a file (or to /dev/null to "
             "discard it)")):
        if not _closed(fd):
            continue
        held = os.open(os.devnull, flags)
        if held != fd:
            os.dup2(held, fd)
            os.close(held)
        setattr(sys, attr, open(fd, mode, closefd=False))
        name = user(parser, a)
        if name:
            raise Error(message.format(name))


def _quiet_stdout() -> None:
    """The reader went away: what is left in Python's buffer must not fail again at exit."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _run(parser: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def show(message, category, filename, lineno, file=None, line=None):
            kind = "note" if issubclass(category, ConversionWarning) else "warning"
            print(f"svdistill: {kind}: {message}", file=sys.stderr)

        warnings.showwarning = show
        warnings.simplefilter("always", ConversionWarning)
        warnings.filterwarnings("always", category=UserWarning, module=r"svdistill(\..*)?")
        from .distill import TrainingStopped
        try:
            _check_std_streams(parser, a)
            _stdin_user(parser, a)  # two arguments on stdin are refused
            _check_outputs(parser, a)
            rc = a.func(a)
            if sys.stdout is not None:
                sys.stdout.flush()  # here, where a reader that went away is seen, not at exit
            return rc
        except TrainingStopped as e:  # not an error: the best model of the epochs before was kept
            kept = (f"the best model, epoch {e.report.best_epoch}, was written to {e.written}"
                    if e.written is not None else f"the best model is epoch {e.report.best_epoch}; not written here")
            print(f"svdistill: stopped early: {_error_text(parser, a.command, e.cause)} ({kept})", file=sys.stderr)
            return DISTILL_STOPPED_EARLY
        except Error as e:
            if _stdout_user(parser, a) and _reader_gone():  # the core's write to stdout failed
                _quiet_stdout()
                return EXIT_READER_GONE
            print(f"svdistill: error: {_error_text(parser, a.command, e)}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # The reader of stdout went away (e.g. '| head'): stop quietly, as Unix tools do.
            _quiet_stdout()
            return EXIT_READER_GONE
        except OSError as e:  # e.g. --report into a folder that does not exist
            where = f"{e.filename}: " if e.filename else ""
            print(f"svdistill: error: {where}{e.strerror or e}", file=sys.stderr)
            return 2
        except MemoryError:
            print("svdistill: error: out of memory", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if _caught:
                print("svdistill: terminated", file=sys.stderr)
                return 128 + int(_caught[0])
            print("svdistill: interrupted", file=sys.stderr)
            return 128 + 2  # SIGINT


if __name__ == "__main__":
    sys.exit(main())
