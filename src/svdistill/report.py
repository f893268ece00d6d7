"""What compress did, per layer and in total: a table, JSON, and the numbers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class LayerReport:
    index: int                # component index in the input (1-based, as nnet-info)
    marker: str
    out: int
    inp: int
    rank: Optional[int]       # None: left unchanged
    params_before: int
    params_after: int
    retained_energy: float    # sum of kept s^2 / ||W||_F^2
    rel_error: float          # ||W - W_k||_F / ||W||_F
    seconds: float
    method: str
    note: str = ""
    # Calibrated only: relative output error on the calibration inputs,
    # sqrt(E||y' - y||^2 / E||y - E y||^2), of the factors written and of the
    # plain truncated SVD at the same rank.
    output_error: Optional[float] = None
    output_error_plain: Optional[float] = None


@dataclass
class CompressReport:
    layers: List[LayerReport]
    params_before: int        # whole model
    params_after: int
    policy: Dict[str, Any]
    seconds: float
    options: Dict[str, Any] = field(default_factory=dict)
    spectra: Dict[int, List[float]] = field(default_factory=dict)  # only if asked for
    calibration: Optional[Dict[str, Any]] = None  # source, frames, utterances, seconds, ridge

    @property
    def ratio(self) -> float:
        """params_after / params_before (the fraction of parameters kept)."""
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        if not d["spectra"]:
            del d["spectra"]
        if d["calibration"] is None:
            del d["calibration"]
        d["ratio"] = self.ratio
        d["compression"] = 1.0 / self.ratio if self.ratio else None
        for L in d["layers"]:
            L["in"] = L.pop("inp")
            if self.calibration is None:
                del L["output_error"], L["output_error_plain"]
        return d

    def format_table(self) -> str:
        """The per-layer table and the totals, as printed on stderr by the CLI."""
        cal = self.calibration is not None
        head = (f"{'comp':>4}  {'shape':>11}  {'rank':>5}  {'params':>11}  {'-> after':>11}  "
                f"{'energy':>8}  {'rel.err':>8}  " + (f"{'out.err':>8}  {'(plain)':>8}  " if cal else "") +
                f"{'time':>7}  method")
        lines = [head, "-" * len(head)]

        def err(x: Optional[float]) -> str:
            return f"{x:>8.4f}" if x is not None else f"{'-':>8}"

        for L in self.layers:
            rank = "-" if L.rank is None else str(L.rank)
            lines.append(f"{L.index:>4}  {f'{L.out}x{L.inp}':>11}  {rank:>5}  {L.params_before:>11,}  "
                         f"{L.params_after:>11,}  {L.retained_energy:>8.4f}  {L.rel_error:>8.4f}  " +
                         (f"{err(L.output_error)}  {err(L.output_error_plain)}  " if cal else "") +
                         f"{L.seconds:>6.2f}s  {L.method}{'  (' + L.note + ')' if L.note else ''}")
        lines.append("-" * len(head))
        if cal:
            c = self.calibration
            assert c is not None
            lines.append(f"calibrated on {c['frames']:,} frames of {c['utterances']:,} "
                         f"utterance{'s' if c['utterances'] != 1 else ''} of "
                         f"{c['source']} ({c['seconds']:.2f} s): energy is the output energy kept; out.err "
                         f"the relative output error on them, (plain) the plain SVD's at that rank"
                         + ("; refined: on the student's own inputs, after the refit" if any(
                             L.note == "refined" for L in self.layers) else ""))
        lines.append(f"model: {self.params_before:,} -> {self.params_after:,} parameters "
                     f"({self.ratio:.1%} kept, {1 / self.ratio if self.ratio else float('inf'):.2f}x smaller) "
                     f"in {self.seconds:.2f} s")
        return "\n".join(lines)
