"""Spectrum plots (matplotlib is the optional extra ``svdistill[plot]``)."""
from __future__ import annotations

from typing import Dict, List, Optional

from .errors import Error


def plot_spectra(layers: List[Dict], path: str, ranks: Optional[Dict[int, Optional[int]]] = None,
                 title: str = "Singular-value spectra") -> None:
    """Normalised singular values per layer (log scale), chosen ranks marked.

    ``layers``: dicts with ``index``, ``out``, ``in``, ``singular_values`` (as
    :func:`svdistill.spectrum` returns). ``ranks``: component index -> rank.
    The PNG is written as models are: atomically, through a symbolic link,
    with the mode any new file gets.
    """
    from .io import atomic_output  # (its checks of the path come before any file is made)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise Error("plots need matplotlib: pip install 'svdistill[plot]'") from None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for L in layers:
        s = L["singular_values"]
        if not s or s[0] <= 0:
            continue
        y = [v / s[0] for v in s]
        line, = ax.semilogy(range(1, len(y) + 1), y, lw=1.2,
                            label=f"comp {L['index']} ({L['out']}x{L['in']})")
        k = (ranks or {}).get(L["index"])
        if k:
            ax.plot([k], [y[min(k, len(y)) - 1]], "o", color=line.get_color(), ms=6)
    ax.set_xlabel("index i")
    ax.set_ylabel("s_i / s_1")
    ax.set_title(title + ("  (dots: chosen ranks)" if ranks else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
