"""``build_parser()``: the commands, their arguments and help, and ``--version``."""
from __future__ import annotations

import argparse

from ..io import write
from .commands import (
    cmd_compare,
    cmd_compress,
    cmd_copy,
    cmd_distill,
    cmd_export,
    cmd_forward,
    cmd_info,
    cmd_specialists,
    cmd_spectrum,
)
from .exits import DISTILL_STOPPED_EARLY, EXIT_READER_GONE, _quiet_stdout
from .options import _add_bool, _defaults_of, _ints


def _add_forward_options(p: argparse.ArgumentParser) -> None:
    """nnet-forward's options, shared by forward and export (which writes forward as a file)."""
    p.add_argument("--feature-transform", metavar="FT", help="feature transform run first (frozen)")
    _add_bool(p, "--no-softmax", "drop a final Softmax/BlockSoftmax (pre-softmax outputs)")
    _add_bool(p, "--apply-log", "write log(posterior + 1e-20)")
    p.add_argument("--class-frame-counts", metavar="FILE",
                   help="subtract prior-scale x log priors from these counts (pseudo log-likelihoods)")
    p.add_argument("--prior-scale", type=float, help="default %(default)g")


def _add_ensemble_options(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    """An ensemble.json ('svdistill specialists' writes it) in place of a model, and the options
    of its combination (svdistill.specialists.combine), as forward and compare take them."""
    from ..specialists import DEFAULT_MAX_ITERATIONS, DEFAULT_TOLERANCE, DEFAULT_TOP_N
    g = p.add_argument_group("ensemble (Hinton et al. 2015, section 5.3)")
    g.add_argument(flag, metavar="ENSEMBLE.json", help=help)
    g.add_argument("--top-n", type=int, metavar="N",
                   help="a specialist takes part in a frame when it holds one of the generalist's N most "
                        f"probable classes (default {DEFAULT_TOP_N}: the best on the digits, "
                        "examples/README.md)")
    g.add_argument("--tolerance", type=float, metavar="E",
                   help="the combination stops when q is estimated within E of the minimiser in every "
                        f"entry (default {DEFAULT_TOLERANCE:g}) ...")
    g.add_argument("--max-iterations", type=int, metavar="N",
                   help=f"... or after N iterations (default {DEFAULT_MAX_ITERATIONS}; such frames are "
                        "counted in a warning)")


def version_text() -> str:
    """``svdistill --version``: the version and the core's build facts (svdistill.build_info())."""
    from .. import build_info
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


def _add_calibration_options(p: "argparse._ActionsContainer", what: str) -> None:
    """--calibration (its help: ``what``) and --calibration-frames, as compress and spectrum take them."""
    p.add_argument("--calibration", metavar="FEATS_RSPECIFIER", help=what)
    p.add_argument("--calibration-frames", type=int, metavar="N",
                   help="frames of --calibration used, from its start (default %(default)s)")


class _VersionAction(argparse.Action):
    """--version: prints version_text() to stdout and exits 0."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version and the core's build facts (compiler, BLAS, SIMD paths) and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            print(version_text(), flush=True)
        except BrokenPipeError:  # `svdistill --version | head -1`: quiet, as every command
            _quiet_stdout()
            parser.exit(EXIT_READER_GONE)
        parser.exit()


# The training options distill and specialists share (specialists() passes them on to
# distill()): declared here once for both commands.

def _add_soft_target_options(g: "argparse._ActionsContainer", hard_weight_default: str) -> None:
    g.add_argument("--temperature", type=float, metavar="T",
                   help="softmax temperature of the soft targets (default %(default)g)")
    g.add_argument("--hard-weight", type=float, metavar="A",
                   help=f"loss = (1-A) T^2 CE(soft) + A CE(labels); {hard_weight_default}")


def _add_optimisation_options(g: "argparse._ActionsContainer", seed_help: str) -> None:
    from .._core import OptimizerOptions
    from ..distill.engine import as_written
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
    g.add_argument("--seed", "--randomizer-seed", type=int, dest="seed", help=seed_help)
    g.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")


def _add_engine_options(g: "argparse._ActionsContainer") -> None:
    g.add_argument("--engine", choices=["core", "torch"],
                   help="core: the C++ trainer (default on the CPU); torch: PyTorch (needs "
                        "svdistill[torch]; implied by --device cuda)")
    g.add_argument("--device", metavar="cpu|cuda|cuda:N",
                   help="where the torch engine trains (default cpu; cuda implies --engine torch)")
    g.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="torch engine on CUDA: matmul precision (tf32) or bf16 autocast; "
                        "fp32 (default) is the only choice on the CPU")
    g.add_argument("--read-ahead", type=int, metavar="UTTS",
                   help="utterances read ahead of training on a background thread (default %(default)s; "
                        "0: none)")


def _add_schedule_options(g: "argparse._ActionsContainer") -> None:
    g.add_argument("--max-epochs", type=int, help="default %(default)s")
    g.add_argument("--min-epochs", type=int, help="train at least this many epochs (default %(default)s)")
    g.add_argument("--keep-lr-epochs", type=int,
                   help="epochs at the initial learning rate, none rejected (default %(default)s)")
    g.add_argument("--start-halving-impr", type=float,
                   help="start halving when the relative CV improvement falls below this (default %(default)g)")
    g.add_argument("--end-halving-impr", type=float,
                   help="stop when, while halving, it falls below this (default %(default)g)")
    g.add_argument("--halving-factor", type=float, help="default %(default)g")


def _add_cv_fraction(g: "argparse._ActionsContainer", help: str) -> None:
    g.add_argument("--cv-fraction", type=float, help=help)


def _add_model_output_options(g: "argparse._ActionsContainer", whose: str) -> None:
    """How a model is written (io.write's options), for every command that writes one."""
    _add_bool(g, "--binary", f"write Kaldi binary (default: {whose} encoding)")
    g.add_argument("--dialect", choices=["kaldi", "pdnn"], help=f"text dialect to write (default: {whose})")
    g.add_argument("--digits", choices=["shortest", "kaldi"],
                   help="text numbers: 'shortest' round-trips float32 exactly; 'kaldi' writes "
                        "nnet-copy's 7 significant digits byte for byte (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    from ..compare import compare
    from ..compress import compress
    from ..distill import distill
    from ..export import export
    from ..forward import forward_archive
    from ..specialists import specialists
    from ..spectrum import spectrum
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
               f"  {DISTILL_STOPPED_EARLY}              distill (or a specialist) stopped early, the best model so\n"
               "                 far written\n"
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
    _add_model_output_options(pc, "the input's")
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
    _add_model_output_options(g, "the input's")
    g.add_argument("--report", metavar="FILE.json", help="write the report as JSON")
    g.add_argument("--plot", metavar="FILE.png",
                   help="plot the spectra with the chosen ranks (needs svdistill[plot])")
    g.add_argument("--check", metavar="FEATS_RSPECIFIER",
                   help="afterwards, compare the output with the input on these features "
                        "(as 'svdistill compare'); MODEL_OUT must be a file")
    g = pz.add_argument_group("calibration (data-aware truncation)")
    _add_calibration_options(g, "factor each layer to minimise its output error on these features (whitened "
                                "SVD; the bias keeps the mean output); the policies then count output energy, "
                                "and --param-budget compares layers by the model's measured output loss")
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
    _add_calibration_options(ps, "whitened spectra: singular values of W R^T for these features' input "
                                 "covariance at each layer (output energies, as compress --calibration counts "
                                 "them)")
    ps.add_argument("--feature-transform", metavar="FT", help="feature transform run first on --calibration")
    ps.set_defaults(func=cmd_spectrum)
    _defaults_of(ps, spectrum)

    pf = sub.add_parser("forward", help="nnet-forward: run a model over a feature archive",
                        usage="%(prog)s [options] MODEL FEATS_RSPECIFIER OUT_WSPECIFIER\n"
                              "       %(prog)s [options] --ensemble ENSEMBLE.json FEATS_RSPECIFIER OUT_WSPECIFIER",
                        description="Run MODEL over every utterance of FEATS_RSPECIFIER and write the "
                                    "outputs to OUT_WSPECIFIER (Kaldi rspecifiers/wspecifiers: ark:, "
                                    "scp:, ark,t:, ark,scp:, pipes, -). Outputs match nnet-forward's. "
                                    "With --ensemble instead of MODEL: the combined posteriors of a "
                                    "generalist and its specialists ('svdistill specialists').")
    # MODEL is left out with --ensemble: every positional is optional to argparse, and
    # _model_or_ensemble (run.py) assigns them once all are read.
    pf.add_argument("model", metavar="MODEL", nargs="?", help="the model (not with --ensemble)")
    pf.add_argument("feats", metavar="FEATS_RSPECIFIER", nargs="?")
    pf.add_argument("output", metavar="OUT_WSPECIFIER", nargs="?")
    _add_forward_options(pf)
    pf.add_argument("--threads", type=int, default=0)
    _add_ensemble_options(pf, "--ensemble", "run this ensemble (its generalist, specialists and feature transform) "
                                            "instead of MODEL: its combined posteriors q, through --apply-log "
                                            "and the priors as a model's; not with --no-softmax, and "
                                            "--feature-transform may only name the ensemble's own")
    pf.set_defaults(func=cmd_forward)
    _defaults_of(pf, forward_archive)

    pm = sub.add_parser("compare", help="teacher-vs-student fidelity on a feature archive",
                        usage="%(prog)s [options] TEACHER STUDENT FEATS_RSPECIFIER\n"
                              "       %(prog)s [options] --teacher-ensemble ENSEMBLE.json STUDENT FEATS_RSPECIFIER",
                        description="Top-1 agreement, mean KL(teacher || student), cross-entropy, the "
                                    "largest posterior difference and parameter counts, over every "
                                    "frame of FEATS_RSPECIFIER.")
    # TEACHER is left out with --teacher-ensemble (as MODEL of forward with --ensemble).
    pm.add_argument("teacher", metavar="TEACHER", nargs="?", help="the teacher (not with --teacher-ensemble)")
    pm.add_argument("student", metavar="STUDENT", nargs="?")
    pm.add_argument("feats", metavar="FEATS_RSPECIFIER", nargs="?")
    pm.add_argument("--feature-transform", metavar="FT",
                    help="feature transform run first for both (with --teacher-ensemble: the ensemble's "
                         "by default; no other)")
    _add_bool(pm, "--json", "JSON instead of a table", default=False)
    pm.add_argument("--threads", type=int, default=0)
    _add_ensemble_options(pm, "--teacher-ensemble", "the teacher is this ensemble, in place of TEACHER: its "
                                                    "combined posteriors q (its logits are log q)")
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
    _add_bool(g, "--average-logits", "several teachers: average logits instead of soft targets")
    g.add_argument("--labels", metavar="ALI_RSPECIFIER",
                   help="pdf-id alignments (e.g. 'ark:ali-to-pdf final.mdl \"ark:gunzip -c ali.*.gz|\" ark:- |')")
    _add_soft_target_options(g, "default 0.1 with --labels and --teacher, 1 with --labels only")
    _add_ensemble_options(pd, "--teacher-ensemble", "the teacher is this ensemble ('svdistill specialists'), in "
                                                    "place of --teacher: the soft targets are its combined "
                                                    "posteriors q at --temperature, softmax(log q / T); "
                                                    "--feature-transform defaults to the ensemble's")
    g = pd.add_argument_group("hints (FitNets: the teacher's hidden activations)")
    g.add_argument("--hint-weight", type=float, metavar="B",
                   help="add B x the mean squared difference between the student's and the teacher's "
                        "activations after each matching nonlinearity, each layer divided by the teacher's "
                        "activation variance (default %(default)g: none; one --teacher only)")
    g.add_argument("--hint-layers", metavar="SPEC",
                   help="which nonlinearities, numbered from 1 in order: '1,3', '2-4' (default: all, paired "
                        "in order)")
    _add_optimisation_options(pd.add_argument_group("optimisation"),
                              "shuffling seed (default %(default)s; same seed, data and threads: same model)")
    _add_engine_options(pd.add_argument_group("engine"))
    g = pd.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="save the run's state there after every epoch (atomically; the two newest kept)")
    g.add_argument("--checkpoint-every", type=int, metavar="FRAMES",
                   help="also save every FRAMES training frames within an epoch (default: only after epochs)")
    _add_bool(g, "--resume", "continue from the newest checkpoint in --checkpoint-dir (same options and "
                             "data; --max-epochs may differ)")
    _add_schedule_options(pd.add_argument_group("schedule (Kaldi's newbob, steps/nnet/train_scheduler.sh)"))
    g = pd.add_argument_group("cross-validation")
    g.add_argument("--cv-feats", metavar="RSPECIFIER", help="held-out features (default: a part of the training data)")
    g.add_argument("--cv-labels", metavar="ALI_RSPECIFIER",
                   help="labels of --cv-feats (default: --labels); with --teacher and no --labels they "
                        "give the CV accuracy only")
    _add_cv_fraction(g, "without --cv-feats: hold out this fraction of the utterances (by key hash; default 0.1); "
                        "refused with --cv-feats")
    g = pd.add_argument_group("output")
    _add_model_output_options(g, "the student's")
    g.add_argument("--report", metavar="FILE.json", help="write the per-epoch table as JSON")
    pd.set_defaults(func=cmd_distill)
    _defaults_of(pd, distill)

    pe = sub.add_parser(
        "specialists", help="train specialists for a generalist (Hinton et al. 2015, section 5)",
        description="Cluster the classes the generalist confuses with each other (K-means on the columns "
                    "of the covariance of its predictions over FEATS_RSPECIFIER) and train one specialist "
                    "per cluster: the generalist (or --init) with its output reduced to the cluster's "
                    "classes plus a dustbin class for all the others, trained as distill trains (with "
                    "distill's training options) on data in which half the frames come from its classes, "
                    "against the generalist's soft targets (and --labels). OUTDIR gets specialist-I.nnet "
                    "for each and ensemble.json, which 'svdistill forward --ensemble' and 'svdistill "
                    "compare --teacher-ensemble' combine. Each specialist's per-epoch table, then one line "
                    "per specialist, go to stderr.",
        epilog="Example: svdistill specialists --generalist final.nnet --feature-transform "
               "final.feature_transform --num-specialists 8 --labels ark:pdf.ark scp:train.scp spec. "
               "Exit status as distill's: 0 done, ensemble.json written; 2 an error; "
               f"{DISTILL_STOPPED_EARLY} a specialist stopped early (its best model written, ensemble.json "
               "not: train the others with --only); 129, 130, 143 stopped by a signal.")
    pe.add_argument("feats", metavar="FEATS_RSPECIFIER",
                    help="the data: read once for the clustering, then again by each specialist "
                         "(its frames picked per utterance; not stdin)")
    pe.add_argument("outdir", metavar="OUTDIR", help="the folder of the specialists and ensemble.json (made if "
                                                     "missing)")
    g = pe.add_argument_group("the ensemble")
    g.add_argument("--generalist", metavar="MODEL", required=True,
                   help="ends in <AffineTransform> + <Softmax>; its predictions are clustered")
    g.add_argument("--feature-transform", metavar="FT",
                   help="run first, frozen, for every model; recorded in ensemble.json")
    g.add_argument("--num-specialists", type=int, metavar="K", help="clusters (default %(default)s)")
    g.add_argument("--classes-per-specialist", type=int, metavar="M",
                   help="each specialist takes the M classes nearest its centroid (default: the clustering "
                        "sizes them)")
    g.add_argument("--overlap", type=int, metavar="N",
                   help="each class also joins its N next-nearest clusters (default %(default)s)")
    g.add_argument("--init", metavar="STUDENT",
                   help="where each specialist starts, e.g. a compressed generalist (default: the generalist)")
    g.add_argument("--labels", metavar="ALI_RSPECIFIER",
                   help="pdf ids: they pick each specialist's frames (else the generalist's arg-max) and "
                        "enter the loss with --hard-weight")
    g.add_argument("--only", type=int, metavar="I",
                   help="train only specialist I (0-based), with the clustering OUTDIR/ensemble.json holds "
                        "if an earlier run wrote one: to spread the specialists over machines")
    g = pe.add_argument_group("targets")
    _add_soft_target_options(g, "default 0.1 with --labels")
    _add_optimisation_options(pe.add_argument_group("optimisation"),
                              "seeds the clustering, each specialist's frames and the shuffling (default "
                              "%(default)s)")
    _add_engine_options(pe.add_argument_group("engine"))
    _add_schedule_options(pe.add_argument_group("schedule (distill's)"))
    g = pe.add_argument_group("cross-validation")
    _add_cv_fraction(g, "hold out this fraction of each specialist's frames (default 0.1)")
    g = pe.add_argument_group("output")
    _add_model_output_options(g, "the generalist's (or --init's)")
    g.add_argument("--report", metavar="FILE.json",
                   help="write each specialist's classes, file and per-epoch table as JSON")
    pe.set_defaults(func=cmd_specialists)
    _defaults_of(pe, specialists, distill)

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
