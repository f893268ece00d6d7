"""The commands: each ``cmd_NAME(args)`` calls the API function of ``svdistill NAME`` and
prints or writes what it returns. Run by ``_run`` after the checks of ``checks.py``."""
from __future__ import annotations

import argparse
import json
import sys

from .. import linalg
from .._core import Error
from ..info import format_info, info
from ..io import atomic_output, iter_components, same_file, write
from .options import keywords_of


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



def _write_json(path: str, obj) -> None:
    """A JSON file, written as models are (atomically, through symbolic links, the usual mode)."""
    text = json.dumps(_json_safe(obj), indent=1) + "\n"
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def cmd_compress(a: argparse.Namespace) -> int:
    from ..compress import compress
    if a.check and (a.input == "-" or a.output == "-"):
        raise Error("--check needs MODEL_IN and MODEL_OUT to be files, not '-'")
    if a.feature_transform and not a.check and not a.calibration:
        raise Error("--feature-transform is the feature transform of --calibration and --check, and neither "
                    "was given: give one of them too, or leave it out")
    for flag, spec in (("--check", a.check), ("--calibration", a.calibration)):
        if spec:
            from ..archive import parse_rspecifier
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
        from ..compare import compare, format_compare
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
        from ..plot import plot_spectra
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
    from ..spectrum import format_spectrum, spectrum
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
        from ..plot import plot_spectra
        plot_spectra(d["layers"], a.plot)
    return 0


def cmd_forward(a: argparse.Namespace) -> int:
    from ..forward import forward_archive
    from ..progress import Progress
    if a.threads:
        linalg.set_num_threads(a.threads)
    with Progress("forward", unit="frames") as bar:  # closed (line cleared) before any error message
        n_utt, n_frames = forward_archive(
            a.model, a.feats, a.output, feature_transform=a.feature_transform, no_softmax=a.no_softmax,
            apply_log=a.apply_log, class_frame_counts=a.class_frame_counts, prior_scale=a.prior_scale,
            ensemble=a.ensemble, top_n=a.top_n, tolerance=a.tolerance, max_iterations=a.max_iterations,
            progress=lambda utts, frames: bar.update(frames, f"{utts:,} utterance{'s' if utts != 1 else ''}"))
    print(f"svdistill forward: {n_utt} utterance{'s' if n_utt != 1 else ''}, {n_frames} frames", file=sys.stderr)
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from ..compare import compare, format_compare
    if a.threads:
        linalg.set_num_threads(a.threads)
    d = compare(a.teacher, a.student, a.feats, feature_transform=a.feature_transform,
                teacher_ensemble=a.teacher_ensemble, top_n=a.top_n, tolerance=a.tolerance,
                max_iterations=a.max_iterations)
    if a.json:
        sys.stdout.write(json.dumps(_json_safe(d), indent=1) + "\n")
    else:
        print(format_compare(d))
    return 0



def cmd_distill(a: argparse.Namespace) -> int:
    from ..distill import TrainingStopped, distill
    # STUDENT_OUT and --report were checked by _check_outputs (writable, not an input).
    if a.threads:
        linalg.set_num_threads(a.threads)
        if a.engine == "torch" or (a.device or "").startswith("cuda"):
            import torch
            torch.set_num_threads(a.threads)
    from ..distill.distributed import Dist
    dist = Dist.from_env()
    writer = dist is None or dist.is_writer
    try:
        _, report = distill(**keywords_of(a, distill), log=lambda line: print(line, file=sys.stderr, flush=True))
    except TrainingStopped as e:  # the best model so far is written; _run says so
        if a.report and writer:
            _write_json(a.report, e.report.to_dict())
        raise
    if a.report and writer:
        _write_json(a.report, report.to_dict())
    return 0


def cmd_specialists(a: argparse.Namespace) -> int:
    import os

    from ..distill import distill
    from ..specialists import specialist_file, specialists
    if os.path.exists(a.outdir) and not os.path.isdir(a.outdir):
        raise Error(f"OUTDIR {a.outdir} is not a folder")
    # An input model that is one of the files OUTDIR will hold (those there now, by name) is
    # refused before any work.
    written = {"ensemble.json"} | {specialist_file(i) for i in (range(a.num_specialists) if a.only is None
                                                               else [a.only])}
    present = [n for n in os.listdir(a.outdir) if n in written] if os.path.isdir(a.outdir) else []
    inputs = (("--generalist", a.generalist), ("--init", a.init), ("--feature-transform", a.feature_transform))
    for flag, value in inputs:
        for name in present:
            if value and same_file(os.path.join(a.outdir, name), value):
                raise Error(f"{flag} {value} is OUTDIR's {name}, which this command writes: refusing to "
                            "overwrite an input; give another OUTDIR")
    if a.threads:
        linalg.set_num_threads(a.threads)
        if a.engine == "torch" or (a.device or "").startswith("cuda"):
            import torch
            torch.set_num_threads(a.threads)
    # Specialists train one after the other (or --only one): each one's line, then its table.
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    res = specialists(**keywords_of(a, specialists, distill), log=log)
    print(format_specialists(res), file=sys.stderr)
    if a.report:
        _write_json(a.report, {"ensemble": res.ensemble, "specialists": [
            {"index": i, "classes": res.classes[i], "file": res.files[i],
             "init_dustbin_rms": res.init_dustbin_rms[i], "distill": r.to_dict()}
            for i, r in sorted(res.reports.items())]})
    return 0


def format_specialists(res) -> str:
    """One line per specialist trained: its classes, frames, best epoch and that epoch's CV
    figures, then where ensemble.json is."""
    def classes(c: list) -> str:
        shown = " ".join(map(str, c)) if len(c) <= 8 else " ".join(map(str, c[:6])) + f" ... {c[-1]}"
        return f"{len(c)}: {shown}"

    rows = [("specialist", "classes", "train frames", "cv frames", "best epoch", "cv KL", "cv agr")]
    for i, r in sorted(res.reports.items()):
        b = r.best
        rows.append((str(i), classes(res.classes[i]), f"{max(e.train_frames for e in r.epochs):,}",
                     f"{r.cv_frames:,}", str(r.best_epoch), "-" if b.cv_kl is None else f"{b.cv_kl:.4f}",
                     "-" if b.cv_agreement is None else f"{b.cv_agreement:.2%}"))
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if j == 1 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    return "\n".join(lines + [f"ensemble: {res.ensemble}"])


def cmd_export(a: argparse.Namespace) -> int:
    from ..export import export
    d = export(a.model, a.output, format=a.format, feature_transform=a.feature_transform,
               no_softmax=a.no_softmax, apply_log=a.apply_log, class_frame_counts=a.class_frame_counts,
               prior_scale=a.prior_scale, opset=a.opset)
    fmt = d["format"] + (f" (opset {d['opset']})" if d["opset"] else "")
    print(f"svdistill export: {fmt}, feats frames x {d['input_dim']} -> out frames x {d['output_dim']} "
          f"({d['output_kind']}), {d['bytes']:,} bytes: {d['path']}", file=sys.stderr)
    return 0
