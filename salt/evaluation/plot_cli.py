"""`salt plot`: the evaluation report of prediction files, from the shell (see report.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from salt.errors import SaltError
from salt.evaluation import discriminants
from salt.evaluation.report import WORKING_POINTS, XBB_WORKING_POINTS, make_report


def build_parser() -> argparse.ArgumentParser:
    """Parser of `salt plot`."""
    parser = argparse.ArgumentParser(
        prog="salt plot",
        description=(
            "Evaluation report of prediction files written by `salt test`:\n"
            "  - b-tagging (<tagger>_pb): light- and c-jet rejection against b-jet\n"
            "    efficiency (puma ROC curves) and at the 60/70/77/85% working points,\n"
            "  - Xbb (<tagger>_phbb): top and QCD rejection of D_Hbb against H->bb\n"
            "    efficiency and at the 50/60/70% working points,\n"
            "  - with track predictions: the track-origin confusion matrix and the\n"
            "    vertexing pair efficiency and purity.\n"
            "Writes <stem>__report.md, <stem>__report.json, <stem>__roc.png (b-tagging),\n"
            "<stem>__roc_xbb.png (Xbb) and, with tracks, <stem>__track_origin*.png. <stem> is\n"
            "the file's stem for one file; several files are several models compared to the\n"
            "first, <stem> compare_<label1>_vs_<label2>..."
        ),
        epilog=(
            "examples:\n  salt plot logs/GN2_A/ckpts/epoch=019-val_loss=0.65432__test_ttbar.h5 \\\n"
            "            logs/GN2_B/ckpts/epoch=015-val_loss=0.64001__test_ttbar.h5 \\\n"
            "            --label baseline --label 'more heads' --fc 0.2 --out-dir plots/\n"
            "  salt plot logs/GN2X_A/ckpts/epoch=009-val_loss=0.41234__test_xbb.h5 \\\n"
            "            --ftop 0.25 --fhcc 0.02 --xbb-wps 50 60 70"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, help="prediction files (HDF5)")
    parser.add_argument(
        "--tagger",
        action="append",
        help="tagger name, i.e. the prefix of <tagger>_pb or <tagger>_phbb; once for all files "
        "or once per file (default: inferred from the *_pb, else *_phbb, field of each file)",
    )
    parser.add_argument(
        "--label",
        action="append",
        help="legend label, once per file (default: the run folder name when the file is in "
        "<run>/ckpts/, else the file stem)",
    )
    parser.add_argument(
        "--fc", type=float, default=discriminants.FC, help="c fraction of D_b (default 0.2)"
    )
    parser.add_argument(
        "--ftau", type=float, default=discriminants.FTAU, help="tau fraction of D_b (default 0.01)"
    )
    parser.add_argument(
        "--ftop",
        type=float,
        default=discriminants.FTOP,
        help="top fraction of D_Hbb (default 0.25)",
    )
    parser.add_argument(
        "--fhcc",
        type=float,
        default=discriminants.FHCC,
        help="H->cc fraction of D_Hbb (default 0.02); the QCD fraction is 1 - ftop - fhcc",
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
    parser.add_argument(
        "--xbb-wps",
        type=float,
        nargs="+",
        default=[w * 100 for w in XBB_WORKING_POINTS],
        help="H->bb efficiency working points in %% (default: 50 60 70)",
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
    if not (0 <= args.ftop <= 1 and 0 <= args.fhcc <= 1 and args.ftop + args.fhcc <= 1):
        parser.error(
            f"need 0 <= --ftop, --fhcc and --ftop + --fhcc <= 1, got {args.ftop}, {args.fhcc}"
        )
    for option, wps in (("--wps", args.wps), ("--xbb-wps", args.xbb_wps)):
        if not all(0 < w < 100 for w in wps):
            parser.error(f"{option} are signal efficiencies in percent, got {wps}")

    import matplotlib

    # A command-line run never shows a window; Agg also avoids probing for a display.
    matplotlib.use("Agg")
    try:
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
            ftop=args.ftop,
            fhcc=args.fhcc,
            xbb_working_points=[w / 100 for w in args.xbb_wps],
        )
    except SaltError as err:  # a file the report cannot read: say why, no traceback
        parser.error(str(err))


if __name__ == "__main__":
    main()
