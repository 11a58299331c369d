"""Figures of the evaluation report: puma ROC curves and the track-origin confusion matrix.

Both draw on `matplotlib.figure.Figure` objects (never the pyplot state machine), so they work
under any backend and leave a user's open figures alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salt.evaluation.metrics import TRACK_ORIGINS

#: PNG resolution: enough to read, far quicker to write than puma's default of 400.
DPI = 150


@dataclass(frozen=True)
class RocCurves:
    """One model's ROC curves, as drawn.

    `rej` maps a rejection class (`"ujets"`, `"cjets"`) to the rejection at each `b_eff`
    (shape `(E,)`, NaN or inf where undefined) and `n_bkg` to its number of background jets.
    """

    label: str
    b_eff: np.ndarray
    rej: dict[str, np.ndarray]
    n_bkg: dict[str, int]


def plot_roc(models: list[RocCurves], path: Path, tag: str) -> Path:
    """Draw light- and c-jet rejection against b-jet efficiency for one or several models.

    With several models, ratio panels (one per rejection class) compare each to the first.

    Parameters
    ----------
    models
        Curves per model; the first is the reference. All must share `b_eff`.
    path
        PNG to write.
    tag
        Second line of the ATLAS tag (sample, fractions).

    Returns
    -------
    Path
        `path`.
    """
    from ftag import Flavours
    from puma import Roc, RocPlot

    # Only classes the reference has can carry a ratio; a class without jets is dropped.
    classes = [c for c in ("ujets", "cjets") if models[0].n_bkg.get(c, 0) > 0]
    several = len(models) > 1
    plot = RocPlot(
        n_ratio_panels=len(classes) if several else 0,
        ylabel="Background rejection",
        xlabel="$b$-jet efficiency",
        atlas_second_tag=tag,
        figsize=(6.5, 6.0 if several else 4.5),
        y_scale=1.4,
        dpi=DPI,
    )
    for cls in classes:
        # Points where any model's rejection is infinite (no background jet left) or zero
        # are cut for all, since puma's ratios need one common efficiency grid.
        keep = np.ones(len(models[0].b_eff), dtype=bool)
        for m in models:
            r = m.rej.get(cls)
            if r is not None and m.n_bkg.get(cls, 0) > 0:
                keep &= np.isfinite(r) & (r > 0)
        for i, m in enumerate(models):
            if m.n_bkg.get(cls, 0) == 0:
                continue
            flav = Flavours[cls]
            plot.add_roc(
                Roc(
                    m.b_eff[keep],
                    m.rej[cls][keep],
                    n_test=m.n_bkg[cls],
                    rej_class=flav,
                    signal_class="bjets",
                    # One model: name the flavour in the legend, as there is no ratio panel
                    # whose legend would tell the line styles apart.
                    label=m.label if several else f"{m.label}: {flav.label} rejection",
                ),
                reference=several and i == 0,
            )
    for panel, cls in enumerate(classes if several else [], start=1):
        plot.set_ratio_class(panel, Flavours[cls])
    plot.draw()
    plot.savefig(str(path))
    return path


def plot_confusion(summary: dict, path: Path, title: str) -> Path:
    """Draw a row-normalised track-origin confusion matrix (truth in rows).

    Parameters
    ----------
    summary
        Output of :func:`salt.evaluation.metrics.confusion_summary`.
    path
        PNG to write.
    title
        Figure title (model label).

    Returns
    -------
    Path
        `path`.
    """
    from matplotlib.figure import Figure

    norm = np.array(
        [[np.nan if v is None else v for v in row] for row in summary["row_normalised"]]
    )
    k = len(TRACK_ORIGINS)
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="Fraction of truth class")
    ax.set_xticks(range(k), TRACK_ORIGINS, rotation=45, ha="right")
    ax.set_yticks(range(k), TRACK_ORIGINS)
    ax.set_xlabel("Predicted origin")
    ax.set_ylabel("Truth origin")
    acc = summary["accuracy"]
    acc_text = "n/a" if acc is None else f"{acc:.3f}"
    ax.set_title(f"{title}: track origin (accuracy {acc_text}, {summary['n_tracks']} tracks)")
    for i in range(k):
        for j in range(k):
            if np.isfinite(norm[i, j]):
                colour = "white" if norm[i, j] > 0.6 else "black"
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8, c=colour)
    fig.savefig(path, dpi=DPI)
    return path
