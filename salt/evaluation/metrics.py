"""Numbers of the evaluation report: b- and Higgs-tagging rejections, track origin, vertexing.

Everything here is plain numpy on arrays already read from a prediction file, so each number can
be checked against a direct computation. Shapes: `N` jets, `T` track slots per jet (40 in UPP
files); track arrays are `(N, T)` and `valid` (bool, `(N, T)`) alone says which slots are real.
"""

from __future__ import annotations

import numpy as np

from salt.labels import TRACK_ORIGINS

#: `HadronConeExclTruthLabelID` values of the jet flavours the report knows.
FLAVOUR_IDS = {"bjets": 5, "cjets": 4, "ujets": 0, "taujets": 15}


#: Truth variable of large-R jets, and the Xbb classes of the report (signal first), labelled
#: by ftag's cuts on it (qcd: every QCD jet, whatever a labeller split it into).
XBB_LABEL_VAR = "R10TruthLabel_R22v1"
XBB_CLASSES = ("hbb", "top", "qcd")


def xbb_truth(jets: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks `(N,)` of hbb, top and qcd jets, from `R10TruthLabel_R22v1`."""
    from ftag import Flavours

    out = {}
    for name in XBB_CLASSES:
        mask = np.zeros(len(jets), dtype=bool)
        mask[Flavours[name].cuts(jets[[XBB_LABEL_VAR]]).idx] = True
        out[name] = mask
    return out


def rejection(
    disc_sig: np.ndarray, disc_bkg: np.ndarray, eff: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rejections of one background at the signal efficiencies `eff`, and the cut values.

    ftag cuts at the linear-interpolated (1 - eff) quantile of the signal jets' discriminant and
    counts a background jet as tagged when its discriminant is >= the cut.
    """
    from ftag.utils import calculate_rejection

    if len(disc_bkg) == 0 or len(disc_sig) == 0:
        return np.full(len(eff), np.nan), np.full(len(eff), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rej, cuts = calculate_rejection(disc_sig, disc_bkg, eff, return_cuts=True)
    return np.asarray(rej, dtype=float), np.asarray(cuts, dtype=float)


def signal_rejections(
    disc_sig: np.ndarray,
    disc_bkgs: dict[str, np.ndarray],
    working_points: list[float],
    eff_key: str,
) -> list[dict[str, float | None]]:
    """Rejections of each background at fixed signal efficiencies.

    Parameters
    ----------
    disc_sig
        `(S,)` discriminant of the signal jets (finite).
    disc_bkgs
        Short background name (`light`, `top`, ...) -> `(B,)` discriminant of its jets; a
        background without jets is left out of the rows.
    working_points
        Signal efficiencies, e.g. `[0.6, 0.7]`.
    eff_key
        Name of the efficiency in each row (`b_eff`, `hbb_eff`).

    Returns
    -------
    list[dict]
        One dict per working point: `<eff_key>`, `cut`, and per background `<name>_rej` and its
        binomial uncertainty `<name>_rej_err`. A rejection is None where no background jet
        passes the cut.
    """
    from ftag.utils import calculate_rejection_error

    eff = np.asarray(working_points, dtype=float)
    rows: list[dict[str, float | None]] = [{eff_key: float(e), "cut": None} for e in eff]
    for short, disc_bkg in disc_bkgs.items():
        if len(disc_bkg) == 0:
            continue
        rej, cuts = rejection(disc_sig, disc_bkg, eff)
        for row, r, cut in zip(rows, rej, cuts):
            row["cut"] = finite_or_none(cut)
            row[f"{short}_rej"] = finite_or_none(r)
            err = calculate_rejection_error(r, len(disc_bkg)) if np.isfinite(r) and r > 0 else None
            row[f"{short}_rej_err"] = finite_or_none(err)
    return rows


def _btag_backgrounds(disc: np.ndarray, truth: np.ndarray, names) -> dict[str, np.ndarray]:
    return {short: disc[truth == FLAVOUR_IDS[flav]] for short, flav in names}


def rejection_table(
    disc: np.ndarray, truth: np.ndarray, working_points: list[float]
) -> list[dict[str, float | None]]:
    """Light, c and tau rejections at fixed b-jet efficiencies (:func:`signal_rejections`).

    `disc` is `(N,)` D_b per jet (finite), `truth` `(N,)` `HadronConeExclTruthLabelID`.
    """
    backgrounds = (("light", "ujets"), ("c", "cjets"), ("tau", "taujets"))
    return signal_rejections(
        disc[truth == FLAVOUR_IDS["bjets"]],
        _btag_backgrounds(disc, truth, backgrounds),
        working_points,
        "b_eff",
    )


def roc_curves(
    disc: np.ndarray, truth: np.ndarray, b_eff: np.ndarray
) -> dict[str, np.ndarray | int]:
    """Light and c rejection against b-jet efficiency.

    Returns `{"b_eff", "light_rej", "c_rej", "n_light", "n_c"}`; a curve is all-NaN when the
    sample has no jet of that flavour.
    """
    disc_b = disc[truth == FLAVOUR_IDS["bjets"]]
    out: dict[str, np.ndarray | int] = {"b_eff": np.asarray(b_eff, dtype=float)}
    for short, disc_bkg in _btag_backgrounds(
        disc, truth, (("light", "ujets"), ("c", "cjets"))
    ).items():
        out[f"{short}_rej"] = rejection(disc_b, disc_bkg, out["b_eff"])[0]
        out[f"n_{short}"] = len(disc_bkg)
    return out


def xbb_roc_curves(
    disc: np.ndarray, truth: dict[str, np.ndarray], hbb_eff: np.ndarray
) -> dict[str, np.ndarray | int]:
    """Top and qcd rejection against hbb efficiency.

    `truth` holds the masks of :func:`xbb_truth`. Returns `{"hbb_eff", "top_rej", "qcd_rej",
    "n_top", "n_qcd"}`; a curve is all-NaN when the sample has no jet of that class.
    """
    out: dict[str, np.ndarray | int] = {"hbb_eff": np.asarray(hbb_eff, dtype=float)}
    for short in ("top", "qcd"):
        out[f"{short}_rej"] = rejection(disc[truth["hbb"]], disc[truth[short]], out["hbb_eff"])[0]
        out[f"n_{short}"] = int(truth[short].sum())
    return out


def origin_confusion(truth: np.ndarray, pred: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Counts of (truth, predicted) track-origin classes over valid tracks.

    Parameters
    ----------
    truth, pred
        `(N, T)` integer class indices (`ftagTruthOriginLabel` and the argmax prediction).
    valid
        `(N, T)` bool; tracks outside it, or with a class outside 0..7, are not counted.

    Returns
    -------
    np.ndarray
        `(8, 8)` int64 counts, rows = truth, columns = prediction.
    """
    k = len(TRACK_ORIGINS)
    t = truth[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    ok = (t >= 0) & (t < k) & (p >= 0) & (p < k)
    return np.bincount(t[ok] * k + p[ok], minlength=k * k).reshape(k, k)


def confusion_summary(counts: np.ndarray) -> dict:
    """Row-normalised confusion matrix, per-class efficiency (its diagonal) and accuracy.

    A truth class without tracks gets a NaN row (None in the JSON).
    """
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = counts / rows
    total = int(counts.sum())
    return {
        "classes": list(TRACK_ORIGINS),
        "n_tracks": total,
        "counts": counts.tolist(),
        "row_normalised": [[finite_or_none(v) for v in row] for row in norm],
        "efficiency": {c: finite_or_none(norm[i, i]) for i, c in enumerate(TRACK_ORIGINS)},
        "accuracy": finite_or_none(np.trace(counts) / total) if total else None,
    }


#: Keys of the pair counts accumulated by :func:`vertex_pair_counts`.
PAIR_KEYS = ("truth", "pred", "both", "truth_sv", "both_sv", "pred_sv")


def vertex_pair_counts(
    truth: np.ndarray, pred: np.ndarray, valid: np.ndarray, chunk: int = 1024
) -> dict[str, int]:
    """Count same-vertex track pairs, vectorised over `(chunk, T, T)` pair grids.

    Pairs are unordered pairs of distinct valid tracks of the same jet. A pair is truly
    same-vertex when both truth indices are equal and >= 0 (a negative index means no truth
    vertex, which never pairs); it is predicted same-vertex when both predicted indices are equal.

    Parameters
    ----------
    truth
        `(N, T)` `ftagTruthVertexIndex` (0 primary, > 0 secondary, < 0 none).
    pred
        `(N, T)` predicted vertex index (`<tagger>_aux_VertexIndex`); padded slots may hold
        anything.
    valid
        `(N, T)` bool.
    chunk
        Jets per pair grid; bounds memory to a few `chunk * T * T` bool arrays.

    Returns
    -------
    dict[str, int]
        `truth`, `pred`, `both` (pred and truth) over all vertices; `truth_sv` and `both_sv`
        for truth secondary vertices (index > 0); `pred_sv`, the predicted pairs with at least
        one track from a truth secondary vertex (the denominator of the secondary purity).
    """
    counts = dict.fromkeys(PAIR_KEYS, 0)
    n_slots = truth.shape[1]
    # Each unordered pair once; the diagonal (a track with itself) is no pair.
    upper = np.triu(np.ones((n_slots, n_slots), dtype=bool), k=1)
    for start in range(0, len(truth), chunk):
        v = valid[start : start + chunk]
        if not v.any():
            continue
        # Padding is mostly at the end: cut the grid at the last slot any jet uses.
        width = int(np.flatnonzero(v.any(axis=0))[-1]) + 1
        v = v[:, :width]
        t = truth[start : start + chunk, :width]
        p = pred[start : start + chunk, :width]
        pair = v[:, :, None] & v[:, None, :] & upper[:width, :width]
        same_t = (t[:, :, None] == t[:, None, :]) & (t >= 0)[:, :, None] & pair
        same_p = (p[:, :, None] == p[:, None, :]) & pair
        sv = t > 0
        same_t_sv = same_t & sv[:, :, None]
        touches_sv = sv[:, :, None] | sv[:, None, :]
        counts["truth"] += int(same_t.sum())
        counts["pred"] += int(same_p.sum())
        counts["both"] += int((same_t & same_p).sum())
        counts["truth_sv"] += int(same_t_sv.sum())
        counts["both_sv"] += int((same_t_sv & same_p).sum())
        counts["pred_sv"] += int((same_p & touches_sv).sum())
    return counts


def vertexing_summary(counts: dict[str, int]) -> dict:
    """Pair efficiency and purity from :func:`vertex_pair_counts`.

    `efficiency = both / truth`, `purity = both / pred`; the `_sv` versions use truth secondary
    vertices only, with the purity taken over predicted pairs touching a secondary-vertex track.
    """

    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    return {
        "pair_counts": {k: int(counts[k]) for k in PAIR_KEYS},
        "all": {
            "efficiency": ratio(counts["both"], counts["truth"]),
            "purity": ratio(counts["both"], counts["pred"]),
        },
        "secondary": {
            "efficiency": ratio(counts["both_sv"], counts["truth_sv"]),
            "purity": ratio(counts["both_sv"], counts["pred_sv"]),
        },
    }


def finite_or_none(x: float | np.floating | None) -> float | None:
    """A finite float, or None (JSON has no NaN/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None
