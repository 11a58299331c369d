"""Figures of the evaluation report: puma ROC curves (b-tagging, Xbb) and the track-origin matrix.

Both draw on `matplotlib.figure.Figure` objects (never the pyplot state machine), so they work
under any backend and leave a user's open figures alone.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salt.evaluation.metrics import TRACK_ORIGINS

#: PNG resolution: enough to read, far quicker to write than puma's default of 400.
DPI = 150
#: Longest model label in the legend, and written along the ratio panels ("Ratio to X" must
#: fit the height of two ratio panels); the width of a title line.
LEGEND_CHARS, RATIO_LABEL_CHARS, TITLE_CHARS = 34, 13, 60


def short_label(label: str, limit: int) -> str:
    """`label`, cut to `limit` characters with an ellipsis when longer."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


@dataclass(frozen=True)
class RocCurves:
    """One model's ROC curves, as drawn.

    `rej` maps a rejection class (`"ujets"`, `"cjets"`; `"top"`, `"qcd"`), in drawing order, to
    the rejection at each signal efficiency `eff` (shape `(E,)`, NaN or inf where undefined)
    and `n_bkg` to its number of background jets. `signal` is the ftag name of the signal class.
    """

    label: str
    eff: np.ndarray
    rej: dict[str, np.ndarray]
    n_bkg: dict[str, int]
    signal: str = "bjets"


def plot_roc(models: list[RocCurves], path: Path, tag: str) -> Path:
    """Write `roc_figure(models, tag)` to the PNG `path`; returns `path`."""
    roc_figure(models, tag).savefig(str(path))
    return path


def legend_labels(labels: list[str]) -> list[str]:
    """Labels short enough for the legend beside the ATLAS tag, still distinct."""
    short = [short_label(lab, LEGEND_CHARS) for lab in labels]
    if len(set(short)) < len(short):
        short = [short_label(lab, LEGEND_CHARS - 4) + f" #{i + 1}" for i, lab in enumerate(labels)]
    return short


def roc_figure(models: list[RocCurves], tag: str):
    """Draw background rejections against signal efficiency for one or several models.

    b-tagging: light- and c-jet rejection against b-jet efficiency; Xbb: top and QCD rejection
    against H -> bb efficiency (whatever classes the curves hold).

    With several models, ratio panels (one per rejection class) compare each to the first;
    along them puma writes "Ratio to <label>", which names the reference when its label is
    short and says "reference" otherwise (the legend then marks it).

    Parameters
    ----------
    models
        Curves per model; the first is the reference. All must share `eff` and `signal`.
    tag
        Second line of the ATLAS tag (sample, fractions).

    Returns
    -------
    puma.RocPlot
        The drawn plot (`.fig` is its matplotlib figure).
    """
    from ftag import Flavours
    from puma import Roc, RocPlot

    # Only classes the reference has can carry a ratio; a class without jets is dropped.
    classes = [c for c in models[0].rej if models[0].n_bkg.get(c, 0) > 0]
    signal = Flavours[models[0].signal]
    several = len(models) > 1
    labels = legend_labels([m.label for m in models])
    reference = labels[0]
    if several and len(reference) > RATIO_LABEL_CHARS:
        labels[0] = reference = f"{short_label(labels[0], LEGEND_CHARS - 12)} (reference)"
    plot = RocPlot(
        n_ratio_panels=len(classes) if several else 0,
        ylabel="Background rejection",
        xlabel=f"{signal.label} efficiency",
        atlas_second_tag=tag,
        figsize=(6.5, 6.0 if several else 4.5),
        y_scale=1.4,
        dpi=DPI,
    )
    for cls in classes:
        # Points where any model's rejection is infinite (no background jet left) or zero
        # are cut for all, since puma's ratios need one common efficiency grid.
        keep = np.ones(len(models[0].eff), dtype=bool)
        for m in models:
            r = m.rej.get(cls)
            if r is not None and m.n_bkg.get(cls, 0) > 0:
                keep &= np.isfinite(r) & (r > 0)
        for i, (m, label) in enumerate(zip(models, labels)):
            if m.n_bkg.get(cls, 0) == 0:
                continue
            flav = Flavours[cls]
            plot.add_roc(
                Roc(
                    m.eff[keep],
                    m.rej[cls][keep],
                    n_test=m.n_bkg[cls],
                    rej_class=flav,
                    signal_class=signal.name,
                    # One model: name the flavour in the legend, as there is no ratio panel
                    # whose legend would tell the line styles apart.
                    label=label if several else f"{label}: {flav.label} rejection",
                ),
                reference=several and i == 0,
            )
    for panel, cls in enumerate(classes if several else [], start=1):
        plot.set_ratio_class(panel, Flavours[cls])
    if several and len(reference) > RATIO_LABEL_CHARS:
        plot.reference_label = "reference"
    plot.draw()
    return plot


def plot_confusion(summary: dict, path: Path, title: str) -> Path:
    """Write `confusion_figure(summary, title)` to the PNG `path`; returns `path`."""
    confusion_figure(summary, title).savefig(path, dpi=DPI)
    return path


def confusion_figure(summary: dict, title: str):
    """Draw a row-normalised track-origin confusion matrix (truth in rows).

    Parameters
    ----------
    summary
        Output of :func:`salt.evaluation.metrics.confusion_summary`.
    title
        The model's label; wrapped onto several lines when long.

    Returns
    -------
    matplotlib.figure.Figure
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
    # the label on lines of its own, so a long one wraps instead of running off the figure
    label = textwrap.fill(title, TITLE_CHARS, break_on_hyphens=False)
    ax.set_title(f"{label}\ntrack origin: accuracy {acc_text}, {summary['n_tracks']} tracks")
    for i in range(k):
        for j in range(k):
            if np.isfinite(norm[i, j]):
                colour = "white" if norm[i, j] > 0.6 else "black"
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8, c=colour)
    return fig
