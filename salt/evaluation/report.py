"""Evaluation report of one or several prediction files written by `salt test`.

Reads only the fields it needs from each file, computes the b-tagging working points (and, when
the file carries track predictions, the track-origin confusion matrix and the vertexing pair
efficiency and purity), draws the ROC curves with puma, and writes `<stem>__report.md`,
`<stem>__report.json` and PNGs beside the first file. `<stem>` is the file's own stem for one
file, and `compare_<label 1>_vs_<label 2>...[__test_<sample>]` for several, so that a comparison
never overwrites the report of a single model.

From Python, after the test loop::

    make_report(["logs/GN2_x/ckpts/epoch=019-val_loss=0.65432__test_ttbar.h5"])

From the shell: `salt plot FILE.h5 [FILE2.h5 ...]` (see `salt plot --help`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from salt.evaluation import metrics
from salt.evaluation.markdown import render_markdown
from salt.evaluation.metrics import FLAVOUR_IDS, TRACK_ORIGINS

LABEL_VAR = "HadronConeExclTruthLabelID"
WORKING_POINTS = (0.60, 0.70, 0.77, 0.85)
#: b-jet efficiencies of the ROC curves.
ROC_B_EFF = np.linspace(0.5, 1.0, 101)
#: Jets per read of the track datasets, so a large file never sits in memory at once.
TRACK_CHUNK = 4096
SAMPLE_TEX = {"ttbar": r"$t\bar{t}$", "zprime": r"$Z'$"}


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`make_report`."""

    markdown: Path
    json: Path
    roc: Path
    track_origin: list[Path] = field(default_factory=list)

    def all(self) -> list[Path]:
        """Every written file, report first."""
        return [self.markdown, self.json, self.roc, *self.track_origin]


# ---------------------------------------------------------------------------------------------
# What to read: tagger, label and sample from the files themselves


def infer_tagger(jet_fields: tuple[str, ...] | list[str], path: Path | str = "") -> str:
    """The tagger whose `<tagger>_pb` is in the jets.

    Salt's writer appends the model's outputs after the copied test-file fields, which may hold
    other taggers' scores (e.g. `MockTagger_pb`): with several candidates the last one wins.
    """
    taggers = [n[: -len("_pb")] for n in jet_fields if n.endswith("_pb")]
    if not taggers:
        raise ValueError(
            f"No '<tagger>_pb' field in the jets of {path}: is this a prediction file written "
            "by `salt test`? Give the tagger with --tagger."
        )
    return taggers[-1]


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


def _jet_numbers(
    jets_ds, tagger: str, fc: float, ftau: float, working_points: list[float], path: Path
) -> tuple[dict, dict]:
    """Working-point table and ROC curves of one file's `jets` dataset."""
    names = jets_ds.dtype.names
    needed = [LABEL_VAR, f"{tagger}_pb", f"{tagger}_pc", f"{tagger}_pu"]
    missing = [n for n in needed if n not in names]
    if missing:
        raise ValueError(
            f"{path}: jets lack {missing}. Found taggers: "
            f"{[n[:-3] for n in names if n.endswith('_pb')]}; pick one with --tagger."
        )
    has_ptau = f"{tagger}_ptau" in names
    jets = jets_ds.fields(needed + ([f"{tagger}_ptau"] if has_ptau else []))[:]
    fractions, notes = metrics.fractions_for(fc, ftau, has_ptau)
    disc = metrics.b_discriminant(jets, tagger, fractions)
    truth = jets[LABEL_VAR]
    finite = np.isfinite(disc)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} jets with a non-finite discriminant left out")
        disc, truth = disc[finite], truth[finite]
    n_jets = {"total": len(truth)} | {f: int((truth == i).sum()) for f, i in FLAVOUR_IDS.items()}
    if n_jets["bjets"] == 0:
        raise ValueError(f"{path}: no b-jets ({LABEL_VAR} == 5), so no working point exists.")
    if n_jets["ujets"] + n_jets["cjets"] == 0:
        raise ValueError(f"{path}: no light or c-jets ({LABEL_VAR} 0 or 4), nothing to reject.")
    numbers = {
        "fractions": fractions,
        "n_jets": n_jets,
        "notes": notes,
        "working_points": metrics.rejection_table(disc, truth, working_points),
    }
    return numbers, metrics.roc_curves(disc, truth, ROC_B_EFF)


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
    fc: float = 0.2,
    ftau: float = 0.01,
    out_dir: Path | str | None = None,
    sample: str | None = None,
    working_points: list[float] | tuple[float, ...] = WORKING_POINTS,
    verbose: bool = True,
) -> ReportFiles:
    """Write the evaluation report of one or several prediction files.

    Parameters
    ----------
    files
        Prediction files (`salt test` output); several files = several models on one ROC plot,
        compared to the first.
    taggers
        Tagger name per file, or one for all; default: inferred from the `*_pb` jet field.
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

    Returns
    -------
    ReportFiles
        `<stem>__report.md`, `<stem>__report.json`, `<stem>__roc.png` and the track-origin
        PNGs (`<stem>__track_origin[_<label>].png`); `<stem>` is the file's stem for one file,
        `comparison_stem(labels, sample)` for several.
    """
    import h5py
    import hdf5plugin  # noqa: F401  (LZ4 filter of ftag's H5Writer)

    paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
    if not paths:
        raise ValueError("No prediction file given.")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"Prediction file not found: {p}")
    metrics.fractions_for(fc, ftau, has_ptau=True)  # fail on bad fractions before any read
    tagger_list = _per_file(taggers, len(paths), "taggers")
    label_list = _per_file(labels, len(paths), "labels")
    if label_list == [None] * len(paths):
        label_list = default_labels(paths)
    label_list = _unique([str(lab) for lab in label_list])
    if sample is None:
        found = list(dict.fromkeys(s for s in map(sample_from_name, paths) if s))
        sample = " / ".join(found) if found else None
    working_points = [w / 100 if w > 1 else float(w) for w in working_points]
    out = Path(out_dir) if out_dir is not None else paths[0].parent
    out.mkdir(parents=True, exist_ok=True)
    stem = paths[0].stem if len(paths) == 1 else comparison_stem(label_list, sample)

    from salt.evaluation.plots import RocCurves, plot_confusion, plot_roc

    models, rocs, origin_pngs = [], [], []
    for path, tagger, label in zip(paths, tagger_list, label_list):
        with h5py.File(path, "r") as f:
            if "jets" not in f:
                raise ValueError(f"{path} has no 'jets' dataset; datasets: {list(f)}")
            tagger = tagger or infer_tagger(f["jets"].dtype.names, path)
            jet_numbers, roc = _jet_numbers(f["jets"], tagger, fc, ftau, working_points, path)
            origin, vertexing, notes = (
                _track_numbers(f["tracks"], tagger) if "tracks" in f else (None, None, [])
            )
        model = {"label": label, "tagger": tagger, "file": str(path.resolve())} | jet_numbers
        model["notes"] += notes
        model["track_origin"] = origin
        model["vertexing"] = vertexing
        model["roc"] = {
            "b_eff": roc["b_eff"].tolist(),
            "light_rej": [metrics.finite_or_none(r) for r in roc["light_rej"]],
            "c_rej": [metrics.finite_or_none(r) for r in roc["c_rej"]],
        }
        models.append(model)
        rocs.append(
            RocCurves(
                label=label,
                b_eff=roc["b_eff"],
                rej={"ujets": roc["light_rej"], "cjets": roc["c_rej"]},
                n_bkg={"ujets": roc["n_light"], "cjets": roc["n_c"]},
            )
        )
        if origin is not None:
            suffix = f"_{_file_part(label)}" if len(paths) > 1 else ""
            png = out / f"{stem}__track_origin{suffix}.png"
            origin_pngs.append(plot_confusion(origin, png, label))
            model["track_origin"]["plot"] = png.name

    used = models[0]["fractions"]
    tag = f"{SAMPLE_TEX.get(sample, sample)} jets\n" if sample else ""
    tag += f"$f_c={used['fc']:g}$, $f_\\tau={used['ftau']:g}$"
    roc_png = plot_roc(rocs, out / f"{stem}__roc.png", tag)

    report = {
        "sample": sample,
        "requested_fractions": {"fc": fc, "ftau": ftau},
        "working_points": working_points,
        "reference": label_list[0],
        "plots": {"roc": roc_png.name, "track_origin": [p.name for p in origin_pngs]},
        "models": models,
    }
    md_path, json_path = out / f"{stem}__report.md", out / f"{stem}__report.json"
    markdown = render_markdown(report)
    md_path.write_text(markdown)
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    files = ReportFiles(markdown=md_path, json=json_path, roc=roc_png, track_origin=origin_pngs)
    if verbose:
        print(markdown)
        print(f"Report written to {out}: {', '.join(p.name for p in files.all())}")
    return files


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
        raise ValueError(f"Got {len(values)} {what} for {n} files: give one, or one per file.")
    return values


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """Parser of `salt plot`."""
    parser = argparse.ArgumentParser(
        prog="salt plot",
        description=(
            "Evaluation report of prediction files written by `salt test`:\n"
            "  - light- and c-jet rejection against b-jet efficiency (puma ROC curves),\n"
            "  - rejections at the 60/70/77/85% b-jet efficiency working points,\n"
            "  - with track predictions: the track-origin confusion matrix and the\n"
            "    vertexing pair efficiency and purity.\n"
            "Writes <stem>__roc.png, <stem>__report.md, <stem>__report.json and, with tracks,\n"
            "<stem>__track_origin*.png. <stem> is the file's stem for one file; several files\n"
            "are several models compared to the first, <stem> compare_<label1>_vs_<label2>..."
        ),
        epilog=(
            "example:\n  salt plot logs/GN2_A/ckpts/epoch=019-val_loss=0.65432__test_ttbar.h5 \\\n"
            "            logs/GN2_B/ckpts/epoch=015-val_loss=0.64001__test_ttbar.h5 \\\n"
            "            --label baseline --label 'more heads' --fc 0.2 --out-dir plots/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, help="prediction files (HDF5)")
    parser.add_argument(
        "--tagger",
        action="append",
        help="tagger name, i.e. the prefix of <tagger>_pb; once for all files or once per "
        "file (default: inferred from the *_pb field of each file)",
    )
    parser.add_argument(
        "--label",
        action="append",
        help="legend label, once per file (default: the run folder name when the file is in "
        "<run>/ckpts/, else the file stem)",
    )
    parser.add_argument("--fc", type=float, default=0.2, help="c fraction of D_b (default 0.2)")
    parser.add_argument(
        "--ftau", type=float, default=0.01, help="tau fraction of D_b (default 0.01)"
    )
    parser.add_argument(
        "--out-dir", type=Path, help="output folder (default: beside the first file)"
    )
    parser.add_argument(
        "--sample", help="sample name for the plot (default: from '..._test_<sample>.h5')"
    )
    parser.add_argument(
        "--wps",
        type=float,
        nargs="+",
        default=[w * 100 for w in WORKING_POINTS],
        help="b-jet efficiency working points in %% (default: 60 70 77 85)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the report")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `salt plot`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    n = len(args.files)
    if args.tagger and len(args.tagger) not in (1, n):
        parser.error(f"--tagger given {len(args.tagger)} times for {n} files: give 1 or {n}.")
    if args.label and len(args.label) != n:
        parser.error(f"--label given {len(args.label)} times for {n} files: give it per file.")
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"prediction file(s) not found: {', '.join(missing)}")
    if not (0 <= args.fc <= 1 and 0 <= args.ftau <= 1 and args.fc + args.ftau <= 1):
        parser.error(f"need 0 <= --fc, --ftau and --fc + --ftau <= 1, got {args.fc}, {args.ftau}")
    if not all(0 < w < 100 for w in args.wps):
        parser.error(f"--wps are b-jet efficiencies in percent, got {args.wps}")

    import matplotlib

    # A command-line run never shows a window; Agg also avoids probing for a display.
    matplotlib.use("Agg")
    make_report(
        args.files,
        taggers=args.tagger,
        labels=args.label,
        fc=args.fc,
        ftau=args.ftau,
        out_dir=args.out_dir,
        sample=args.sample,
        working_points=[w / 100 for w in args.wps],
        verbose=not args.quiet,
    )


if __name__ == "__main__":
    main()
