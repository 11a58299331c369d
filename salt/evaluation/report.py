"""Evaluation report of one or several prediction files written by `salt test`.

Reads only the fields it needs from each file and computes, for what the tagger outputs, the
b-tagging working points (`<tagger>_pb`: D_b against light, c and tau jets) and the Higgs-tagging
ones (`<tagger>_phbb`: D_Hbb against top and QCD jets), and, when the file carries track
predictions, the track-origin confusion matrix and the vertexing pair efficiency and purity. It
draws the ROC curves with puma and writes `<stem>__report.md`, `<stem>__report.json`,
`<stem>__roc.png` (b-tagging), `<stem>__roc_xbb.png` (Xbb) and PNGs beside the first file.
`<stem>` is the file's own stem for one file, and
`compare_<label 1>_vs_<label 2>...[__test_<sample>]` for several, so that a comparison never
overwrites the report of a single model.

From Python, after the test loop::

    make_report(["logs/GN2_x/ckpts/epoch=019-val_loss=0.65432__test_ttbar.h5"])

From the shell: `salt plot FILE.h5 [FILE2.h5 ...]` (salt/evaluation/plot_cli.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from salt.errors import SaltError
from salt.evaluation import discriminants, metrics
from salt.evaluation.markdown import render_markdown
from salt.evaluation.metrics import FLAVOUR_IDS, TRACK_ORIGINS, XBB_LABEL_VAR

LABEL_VAR = "HadronConeExclTruthLabelID"
WORKING_POINTS = (0.60, 0.70, 0.77, 0.85)
#: H -> bb efficiencies of the Xbb working points.
XBB_WORKING_POINTS = (0.50, 0.60, 0.70)
#: b-jet and H -> bb efficiencies of the ROC curves.
ROC_B_EFF = np.linspace(0.5, 1.0, 101)
ROC_HBB_EFF = np.linspace(0.3, 1.0, 141)
#: Jets per read of the track datasets, so a large file never sits in memory at once.
TRACK_CHUNK = 4096
SAMPLE_TEX = {"ttbar": r"$t\bar{t}$", "zprime": r"$Z'$"}


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`make_report`."""

    markdown: Path
    json: Path
    roc: Path | None  # None: no b-tagging outputs
    roc_xbb: Path | None = None  # None: no Xbb outputs
    track_origin: list[Path] = field(default_factory=list)

    def all(self) -> list[Path]:
        """Every written file, report first."""
        rocs = [p for p in (self.roc, self.roc_xbb) if p is not None]
        return [self.markdown, self.json, *rocs, *self.track_origin]


# ---------------------------------------------------------------------------------------------
# What to read: tagger, label and sample from the files themselves


def infer_tagger(jet_fields: tuple[str, ...] | list[str], path: Path | str = "") -> str:
    """The tagger whose `<tagger>_pb` (b-tagging) or `<tagger>_phbb` (Xbb) is in the jets.

    Salt's writer appends the model's outputs after the copied test-file fields, which may hold
    other taggers' scores (e.g. `MockTagger_pb`): with several candidates the last one wins.
    """
    for suffix in ("_pb", "_phbb"):
        taggers = [n[: -len(suffix)] for n in jet_fields if n.endswith(suffix)]
        if taggers:
            return taggers[-1]
    raise SaltError(
        f"No '<tagger>_pb' or '<tagger>_phbb' field in the jets of {path}: is this a prediction "
        "file written by `salt test`? Give the tagger with --tagger."
    )


def default_label(path: Path) -> str:
    """Run folder name for `<run>/ckpts/<file>.h5`, else the file stem (without the
    `__test_<sample>` that `salt test` appends)."""
    path = Path(path)
    if path.parent.name == "ckpts" and path.parent.parent.name:
        return path.parent.parent.name
    return re.sub(r"__test_.+$", "", path.stem) or path.stem


def default_labels(paths: list[Path]) -> list[str]:
    """Short, distinct legend labels: the run folders; for checkpoints of one run, their epochs
    (``epoch=003``); else the file stems."""
    labels = [default_label(p) for p in paths]
    if len(set(labels)) == len(labels):
        return labels
    epochs = [re.match(r"(epoch=\d+)", Path(p).stem) for p in paths]
    if all(epochs):
        tagged = [m[1] if labels.count(lab) > 1 else lab for m, lab in zip(epochs, labels)]
        if len(set(tagged)) == len(tagged):
            return tagged
    return [Path(p).stem for p in paths]  # the same file name in several folders, say


#: Longest name part made from one label, and longest comparison stem.
_LABEL_CHARS, _STEM_CHARS = 40, 120


def comparison_stem(labels: list[str], sample: str | None) -> str:
    """``compare_<label 1>_vs_<label 2>[...][__test_<sample>]``, safe as a file name.

    A stem too long for a file name is cut, with a hash of the whole that keeps it unique.
    """
    parts = [_file_part(lab) for lab in labels]
    stem = "compare_" + "_vs_".join(parts)
    if len(stem) > _STEM_CHARS:
        digest = hashlib.sha1("\0".join(labels).encode()).hexdigest()[:8]
        stem = f"{stem[: _STEM_CHARS - 9]}-{digest}"
    if sample:
        stem += f"__test_{_file_part(sample)}"
    return stem


def _file_part(label: str) -> str:
    """`label` as part of a file name: runs of other characters become one `-`."""
    return re.sub(r"[^A-Za-z0-9=._+-]+", "-", label).strip("-")[:_LABEL_CHARS]


def sample_from_name(path: Path) -> str | None:
    """`ttbar` from `..._test_ttbar.h5` (Salt's prediction-file naming), else None."""
    match = re.search(r"_test_(.+)$", Path(path).stem)
    return match.group(1) if match else None


def _unique(labels: list[str]) -> list[str]:
    """Labels made distinct by a counter, as puma keys colours by label."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


# ---------------------------------------------------------------------------------------------
# Numbers per file


def _btag_numbers(
    jets_ds, tagger: str, fc: float, ftau: float, working_points: list[float], path: Path
) -> tuple[dict, dict]:
    """b-tagging working points and ROC curves of one file's `jets` dataset."""
    names = jets_ds.dtype.names
    light = [f"{tagger}_{p}" for p in discriminants.LIGHT_PX if f"{tagger}_{p}" in names]
    needed = [LABEL_VAR, f"{tagger}_pb", f"{tagger}_pc"]
    missing = [n for n in needed if n not in names] + ([] if light else [f"{tagger}_pu"])
    if missing:
        raise SaltError(
            f"{path}: jets lack {missing}. Found taggers: "
            f"{[n[:-3] for n in names if n.endswith('_pb')]}; pick one with --tagger."
        )
    has_ptau = f"{tagger}_ptau" in names
    jets = jets_ds.fields(needed + light + ([f"{tagger}_ptau"] if has_ptau else []))[:]
    fractions, notes = discriminants.btag_fractions(fc, ftau, has_ptau)
    disc = discriminants.b_discriminant(jets, tagger, fractions)
    truth = jets[LABEL_VAR]
    finite = np.isfinite(disc)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} jets with a non-finite D_b left out")
        disc, truth = disc[finite], truth[finite]
    n_jets = {"total": len(truth)} | {f: int((truth == i).sum()) for f, i in FLAVOUR_IDS.items()}
    if n_jets["bjets"] == 0:
        raise SaltError(f"{path}: no b-jets ({LABEL_VAR} == 5), so no working point exists.")
    if n_jets["ujets"] + n_jets["cjets"] == 0:
        raise SaltError(f"{path}: no light or c-jets ({LABEL_VAR} 0 or 4), nothing to reject.")
    roc = metrics.roc_curves(disc, truth, ROC_B_EFF)
    numbers = {
        "fractions": fractions,
        "n_jets": n_jets,
        "notes": notes,
        "working_points": metrics.rejection_table(disc, truth, working_points),
        "roc": {
            "b_eff": roc["b_eff"].tolist(),
            "light_rej": [metrics.finite_or_none(r) for r in roc["light_rej"]],
            "c_rej": [metrics.finite_or_none(r) for r in roc["c_rej"]],
        },
    }
    return numbers, roc


def _xbb_numbers(
    jets_ds, tagger: str, ftop: float, fhcc: float, working_points: list[float], path: Path
) -> tuple[dict, dict]:
    """Higgs-tagging working points and ROC curves of one file's `jets` dataset."""
    names = jets_ds.dtype.names
    if XBB_LABEL_VAR not in names:
        raise SaltError(
            f"{path}: jets lack {XBB_LABEL_VAR}, the truth label of the Xbb classes; write it "
            "with the predictions (salt test does) or test on a file that has it."
        )
    probs = [n for n in names if n.startswith(f"{tagger}_p")]
    jets = jets_ds.fields([XBB_LABEL_VAR, *probs])[:]
    fractions, notes = discriminants.xbb_fractions(
        ftop, fhcc, f"{tagger}_ptop" in names, f"{tagger}_phcc" in names
    )
    if not discriminants.qcd_pxs(names, tagger):
        raise SaltError(f"{path}: jets lack {tagger}_pqcd (or a split {tagger}_pqcd*).")
    disc = discriminants.hbb_discriminant(jets, tagger, fractions)
    truth = metrics.xbb_truth(jets)
    finite = np.isfinite(disc)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} jets with a non-finite D_Hbb left out")
        disc, truth = disc[finite], {k: v[finite] for k, v in truth.items()}
    n_jets = {"total": len(disc)} | {k: int(v.sum()) for k, v in truth.items()}
    if n_jets["hbb"] == 0:
        raise SaltError(f"{path}: no hbb jets ({XBB_LABEL_VAR} == 11), no working point exists.")
    if n_jets["top"] + n_jets["qcd"] == 0:
        raise SaltError(f"{path}: no top or QCD jets ({XBB_LABEL_VAR}), nothing to reject.")
    disc_bkgs = {k: disc[truth[k]] for k in ("top", "qcd")}
    roc = metrics.xbb_roc_curves(disc, truth, ROC_HBB_EFF)
    numbers = {
        "fractions": fractions,
        "n_jets": n_jets,
        "notes": notes,
        "working_points": metrics.signal_rejections(
            disc[truth["hbb"]], disc_bkgs, working_points, "hbb_eff"
        ),
        "roc": {
            "hbb_eff": roc["hbb_eff"].tolist(),
            "top_rej": [metrics.finite_or_none(r) for r in roc["top_rej"]],
            "qcd_rej": [metrics.finite_or_none(r) for r in roc["qcd_rej"]],
        },
    }
    return numbers, roc


def _track_numbers(tracks_ds, tagger: str) -> tuple[dict | None, dict | None, list[str]]:
    """Track-origin confusion and vertexing counts of one file's `tracks`, where present."""
    names = tracks_ds.dtype.names
    notes: list[str] = []
    if "valid" not in names or tracks_ds.ndim != 2:
        return None, None, ["tracks without a 'valid' field: track sections skipped"]
    origin_probs = [f"{tagger}_p{c}" for c in TRACK_ORIGINS]
    if f"{tagger}_aux_TrackOrigin" in names:
        origin_pred = [f"{tagger}_aux_TrackOrigin"]
    elif all(n in names for n in origin_probs):
        # Salt's own writer stores only the class probabilities; the argmax is the prediction.
        origin_pred = origin_probs
        notes.append(f"track origin: argmax of {tagger}_p<class> (no {tagger}_aux_TrackOrigin)")
    else:
        origin_pred = []
    do_origin = bool(origin_pred) and "ftagTruthOriginLabel" in names
    vertex_pred = next(
        (n for n in (f"{tagger}_aux_VertexIndex", "VertexIndex") if n in names), None
    )
    if vertex_pred == "VertexIndex":
        notes.append(f"vertexing: 'VertexIndex' used (no {tagger}_aux_VertexIndex)")
    do_vertex = vertex_pred is not None and "ftagTruthVertexIndex" in names
    if not (do_origin or do_vertex):
        return None, None, []

    fields = ["valid"]
    if do_origin:
        fields += ["ftagTruthOriginLabel", *origin_pred]
    if do_vertex:
        fields += ["ftagTruthVertexIndex", vertex_pred]
    confusion = np.zeros((len(TRACK_ORIGINS),) * 2, dtype=np.int64)
    pairs = dict.fromkeys(metrics.PAIR_KEYS, 0)
    for start in range(0, tracks_ds.shape[0], TRACK_CHUNK):
        chunk = tracks_ds.fields(fields)[start : start + TRACK_CHUNK]
        valid = chunk["valid"].astype(bool)
        if do_origin:
            if len(origin_pred) == 1:
                pred = chunk[origin_pred[0]]
            else:
                pred = np.stack([chunk[n] for n in origin_pred], axis=-1).argmax(-1)
            confusion += metrics.origin_confusion(chunk["ftagTruthOriginLabel"], pred, valid)
        if do_vertex:
            counts = metrics.vertex_pair_counts(
                chunk["ftagTruthVertexIndex"], chunk[vertex_pred], valid
            )
            for k in pairs:
                pairs[k] += counts[k]
    return (
        metrics.confusion_summary(confusion) if do_origin else None,
        metrics.vertexing_summary(pairs) if do_vertex else None,
        notes,
    )


# ---------------------------------------------------------------------------------------------
# The report


def make_report(
    files: list[Path | str] | Path | str,
    taggers: list[str] | str | None = None,
    labels: list[str] | None = None,
    fc: float = discriminants.FC,
    ftau: float = discriminants.FTAU,
    out_dir: Path | str | None = None,
    sample: str | None = None,
    working_points: list[float] | tuple[float, ...] = WORKING_POINTS,
    verbose: bool = True,
    ftop: float = discriminants.FTOP,
    fhcc: float = discriminants.FHCC,
    xbb_working_points: list[float] | tuple[float, ...] = XBB_WORKING_POINTS,
) -> ReportFiles:
    """Write the evaluation report of one or several prediction files.

    The b-tagging sections appear for taggers with `<tagger>_pb`, the Xbb sections for taggers
    with `<tagger>_phbb`; a tagger with neither gets only its notes and track sections.

    Parameters
    ----------
    files
        Prediction files (`salt test` output); several files = several models on one ROC plot,
        compared to the first.
    taggers
        Tagger name per file, or one for all; default: inferred from the `*_pb` (else
        `*_phbb`) jet field.
    labels
        Legend label per file; default: the run folder name (`<run>/ckpts/<file>.h5`), the
        checkpoint's epoch for several checkpoints of one run, else the file stem.
    fc, ftau
        c and tau fractions of D_b; the light fraction is `1 - fc - ftau`. A file without
        `<tagger>_ptau` uses `ftau = 0` (noted in the report).
    out_dir
        Where to write; default: the folder of the first file.
    sample
        Sample name shown on the plot; default: `<sample>` of `..._test_<sample>.h5`.
    working_points
        b-jet efficiencies of the rejection table (fractions; values > 1 are read as percent).
    verbose
        Print the markdown report to stdout.
    ftop, fhcc
        top and H -> cc fractions of D_Hbb; the QCD fraction is `1 - ftop - fhcc`.
    xbb_working_points
        H -> bb efficiencies of the Xbb rejection table (as `working_points`).

    Returns
    -------
    ReportFiles
        `<stem>__report.md`, `<stem>__report.json`, `<stem>__roc.png` (b-tagging),
        `<stem>__roc_xbb.png` (Xbb) and the track-origin PNGs
        (`<stem>__track_origin[_<label>].png`); `<stem>` is the file's stem for one file,
        `comparison_stem(labels, sample)` for several.
    """
    import h5py
    import hdf5plugin  # noqa: F401  (LZ4 filter of ftag's H5Writer)

    paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
    if not paths:
        raise SaltError("No prediction file given.")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"Prediction file not found: {p}")
    # fail on bad fractions before any read
    discriminants.btag_fractions(fc, ftau, has_ptau=True)
    discriminants.xbb_fractions(ftop, fhcc)
    tagger_list = _per_file(taggers, len(paths), "taggers")
    label_list = _per_file(labels, len(paths), "labels")
    if label_list == [None] * len(paths):
        label_list = default_labels(paths)
    label_list = _unique([str(lab) for lab in label_list])
    if sample is None:
        found = list(dict.fromkeys(s for s in map(sample_from_name, paths) if s))
        sample = " / ".join(found) if found else None
    working_points = _fractions(working_points)
    xbb_working_points = _fractions(xbb_working_points)
    out = Path(out_dir) if out_dir is not None else paths[0].parent
    out.mkdir(parents=True, exist_ok=True)
    stem = paths[0].stem if len(paths) == 1 else comparison_stem(label_list, sample)

    from salt.evaluation.plots import RocCurves, plot_confusion, plot_roc

    models, rocs, xbb_rocs, origin_pngs = [], [], [], []
    for path, tagger, label in zip(paths, tagger_list, label_list):
        model = {"label": label, "tagger": tagger, "file": str(path.resolve()), "notes": []}
        with h5py.File(path, "r") as f:
            if "jets" not in f:
                raise SaltError(f"{path} has no 'jets' dataset; datasets: {list(f)}")
            names = f["jets"].dtype.names
            tagger = model["tagger"] = tagger or infer_tagger(names, path)
            if not any(n.startswith(f"{tagger}_") for n in names):
                found = sorted({n.rsplit("_", 1)[0] for n in names if n.endswith(("_pb", "_phbb"))})
                raise SaltError(
                    f"{path}: no output of tagger '{tagger}' in the jets. Found taggers: "
                    f"{found}; pick one with --tagger."
                )
            model["btag"] = model["xbb"] = None
            if discriminants.has_btag(names, tagger):
                model["btag"], roc = _btag_numbers(
                    f["jets"], tagger, fc, ftau, working_points, path
                )
                rej, n_bkg = (
                    {"ujets": roc["light_rej"], "cjets": roc["c_rej"]},
                    {"ujets": roc["n_light"], "cjets": roc["n_c"]},
                )
                rocs.append(RocCurves(label, roc["b_eff"], rej, n_bkg, "bjets"))
            if discriminants.has_xbb(names, tagger):
                model["xbb"], roc = _xbb_numbers(
                    f["jets"], tagger, ftop, fhcc, xbb_working_points, path
                )
                rej = {"top": roc["top_rej"], "qcd": roc["qcd_rej"]}
                n_bkg = {"top": roc["n_top"], "qcd": roc["n_qcd"]}
                xbb_rocs.append(RocCurves(label, roc["hbb_eff"], rej, n_bkg, "hbb"))
            if model["btag"] is None and model["xbb"] is None:
                model["notes"].append(
                    f"no b-tagging ({tagger}_pb) or Xbb ({tagger}_phbb) outputs: no working points"
                )
            origin, vertexing, notes = (
                _track_numbers(f["tracks"], tagger) if "tracks" in f else (None, None, [])
            )
        for section in ("btag", "xbb"):
            if model[section] is not None:
                model["notes"] += model[section].pop("notes")
        model["notes"] += notes
        model["track_origin"] = origin
        model["vertexing"] = vertexing
        models.append(model)
        if origin is not None:
            suffix = f"_{_file_part(label)}" if len(paths) > 1 else ""
            png = out / f"{stem}__track_origin{suffix}.png"
            origin_pngs.append(plot_confusion(origin, png, label))
            model["track_origin"]["plot"] = png.name

    sample_tag = f"{SAMPLE_TEX.get(sample, sample)} jets\n" if sample else ""
    roc_png = xbb_png = None
    # one plot per kind, over the models that have it (all share the kind's efficiencies)
    with_btag = [m for m in models if m["btag"] is not None]
    if rocs:
        used = with_btag[0]["btag"]["fractions"]
        tag = sample_tag + f"$f_c={used['fc']:g}$, $f_\\tau={used['ftau']:g}$"
        roc_png = plot_roc(rocs, out / f"{stem}__roc.png", tag)
    with_xbb = [m for m in models if m["xbb"] is not None]
    if xbb_rocs:
        used = with_xbb[0]["xbb"]["fractions"]
        tag = sample_tag + f"$f_{{top}}={used['ftop']:g}$, $f_{{Hcc}}={used['fhcc']:g}$"
        xbb_png = plot_roc(xbb_rocs, out / f"{stem}__roc_xbb.png", tag)

    report = {
        "sample": sample,
        "requested_fractions": {"fc": fc, "ftau": ftau, "ftop": ftop, "fhcc": fhcc},
        "working_points": working_points,
        "xbb_working_points": xbb_working_points,
        "reference": label_list[0],
        "plots": {
            "roc": roc_png and roc_png.name,
            "roc_xbb": xbb_png and xbb_png.name,
            "track_origin": [p.name for p in origin_pngs],
        },
        "models": models,
    }
    md_path, json_path = out / f"{stem}__report.md", out / f"{stem}__report.json"
    markdown = render_markdown(report)
    md_path.write_text(markdown)
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    files = ReportFiles(md_path, json_path, roc_png, xbb_png, origin_pngs)
    if verbose:
        print(markdown)
        print(f"Report written to {out}: {', '.join(p.name for p in files.all())}")
    return files


def _fractions(values: list[float] | tuple[float, ...]) -> list[float]:
    """Efficiencies as fractions: values > 1 are read as percent."""
    return [w / 100 if w > 1 else float(w) for w in values]


def _per_file(values, n: int, what: str) -> list:
    """One value per file from None, a single value, or a list of one or `n` values."""
    if values is None:
        return [None] * n
    if isinstance(values, str):
        values = [values]
    values = list(values)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise SaltError(f"Got {len(values)} {what} for {n} files: give one, or one per file.")
    return values
