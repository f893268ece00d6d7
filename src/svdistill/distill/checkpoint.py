"""Checkpoints of a distillation run, and resuming from them.

A checkpoint holds everything the run needs to go on as if it had never
stopped: the student's current and best parameters, the optimizer's state
(momentum or Adam moments and step), the schedule's state (epoch, learning
rate, best CV objective, halving, the table so far) and, inside an epoch, its
position as the number of minibatches done. Shuffling is seeded from
(seed, epoch), so the position is enough: on resume the epoch's data are read
and shuffled again and the minibatches already trained are skipped.

Files are ``DIR/checkpoint-EPOCH-BATCH.npz`` (npz: numpy arrays plus one JSON
entry), written as every output is (:func:`svdistill.io.atomic_output`: a
temporary in DIR renamed into place) and always flushed to disk, so a run
killed at any moment, or a power loss, leaves the previous checkpoint intact;
the two newest are kept. A checkpoint records the options and data it was made with: resuming
with others is refused, naming the first difference.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .. import _core
from ..errors import Error, option_error
from ..io import atomic_output

FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d{4,})-(\d{8,})\.npz$")
_TMP_PREFIX = ".checkpoint-"
KEEP = 2


def _crc_arrays(arrays) -> str:
    crc = 0
    for a in arrays:
        a = np.ascontiguousarray(a)
        crc = zlib.crc32(str(a.shape).encode(), crc)
        crc = zlib.crc32(a.view(np.uint8).reshape(-1), crc)
    return f"{crc:08x}"


def model_fingerprint(model) -> str:
    """crc32 over a model's structure (kinds, dims, coefficients such as LearnRateCoef and
    MaxNorm, integer data such as Splice offsets) and every parameter block."""
    blocks = []
    for c in model.components:
        head = f"{c.marker} {c.input_dim} {c.output_dim} {sorted(c.coefs.items())}"
        blocks.append(np.frombuffer(head.encode(), np.uint8))
        if c.ints is not None:
            blocks.append(np.asarray(c.ints))
        blocks.extend(c.params.values())
    return _crc_arrays(blocks)


def ensemble_fingerprint(ensemble) -> dict:
    """What of a teacher ensemble decides its soft targets: its models, classes and the
    options of its combination."""
    return dict(generalist=model_fingerprint(ensemble.generalist),
                specialists=[model_fingerprint(m) for m in ensemble.specialists],
                classes=[list(c) for c in ensemble.classes], top_n=int(ensemble.top_n),
                tolerance=float(ensemble.tolerance), max_iterations=int(ensemble.max_iterations))


def data_fingerprint(feats: Any) -> str:
    """What identifies training data: an rspecifier (and its file's size and mtime), or a
    crc32 of the arrays given in memory. A command (``ark:cmd |``) is known by its text
    alone, and an scp by its own file, not by the archives it points to."""
    if isinstance(feats, str):
        spec = feats.split(":", 1)[1] if ":" in feats else feats
        path = spec.strip()
        if not path.endswith("|") and os.path.isfile(path):
            st = os.stat(path)
            return f"{feats} ({st.st_size} bytes, mtime {st.st_mtime_ns})"
        return feats
    if isinstance(feats, np.ndarray):
        return f"array {_crc_arrays([feats])}"
    if isinstance(feats, Mapping):
        keys = [str(k) for k in feats]
        arrays = [np.frombuffer(" ".join(keys).encode(), np.uint8)]
        arrays += [np.asarray(v, np.float32) for v in feats.values()]
        return f"dict of {len(keys)} utterances {_crc_arrays(arrays)}"
    return type(feats).__name__


class Checkpoints:
    """The checkpoints of one run in ``folder``; ``writer`` is False on all but one rank."""

    def __init__(self, folder: str, fingerprint: Dict[str, Any], *, writer: bool = True) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.writer = writer
        if writer:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise option_error("checkpoint_dir", f"{folder}: cannot create it: {e.strerror}") from None
            if not os.access(folder, os.W_OK):
                raise option_error("checkpoint_dir", f"{folder}: not writable")
            # What a killed run left half-written: temporaries nobody holds locked (of any
            # checkpoint's name: the next one saved has another name), and those of the
            # naming svdistill 0.x used ('.checkpoint-XXXX.tmp', never locked).
            _core.remove_stale_temporaries(folder, _TMP_PREFIX)
            for name in os.listdir(folder):
                if name.startswith(_TMP_PREFIX) and name.endswith(".tmp"):
                    try:
                        os.unlink(os.path.join(folder, name))
                    except OSError:
                        pass

    def any(self) -> bool:
        """Whether the folder holds checkpoints (of this run or another)."""
        return bool(self._existing())

    def _existing(self) -> List[Tuple[int, int, str]]:
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        out = []
        for name in names:
            m = _NAME.match(name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), os.path.join(self.folder, name)))
        return sorted(out)

    def save(self, meta: Dict[str, Any], arrays: Dict[str, np.ndarray], epoch: int, batch: int) -> Optional[str]:
        if not self.writer:
            return None
        meta = dict(meta, format=FORMAT, fingerprint=self.fingerprint)
        path = os.path.join(self.folder, f"checkpoint-{epoch:04d}-{batch:08d}.npz")
        try:
            # Durable whatever SVDISTILL_FSYNC says: a checkpoint exists to survive a crash.
            with atomic_output(path, durable=True) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                             **arrays)  # type: ignore[arg-type]  # names, not savez's options
        except OSError as e:
            raise Error(f"{path}: cannot write the checkpoint: {e.strerror or e}") from None
        for _, _, old in self._existing()[:-KEEP]:
            try:
                os.unlink(old)
            except OSError:
                pass
        return path

    def load_newest(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], str]:
        """The newest readable checkpoint (an unreadable newest one, e.g. a damaged disk,
        falls back to the one before), checked against this run's fingerprint."""
        found = self._existing()
        if not found:
            raise option_error("resume", f"is set, but {self.folder} holds no checkpoint")
        problems = []
        for _, _, path in reversed(found):
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                meta = json.loads(bytes(arrays.pop("__meta__")).decode())
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                problems.append(f"{path}: not a readable svdistill checkpoint: {e}")
                continue
            break
        else:
            raise Error("; ".join(problems))
        if meta.get("format") != FORMAT:
            raise Error(f"{path}: checkpoint format {meta.get('format')}, this svdistill reads {FORMAT}")
        theirs = meta.get("fingerprint", {})
        for key in sorted(set(theirs) | set(self.fingerprint)):
            a, b = theirs.get(key), self.fingerprint.get(key)
            if a != b:
                raise option_error("resume", f"{path}: the checkpoint was made with {key} = {a!r}, this run "
                                   f"has {b!r}: resume with the same options and data, or start afresh in "
                                   "another {checkpoint_dir}", others=["checkpoint_dir"])
        meta["skipped"] = problems
        return meta, arrays, path
