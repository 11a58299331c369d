"""The `to_onnx` command: a trained run -> one ONNX file with metadata, checked against PyTorch.

    to_onnx --ckpt_path logs/GN2_<stamp>/ckpts/epoch=012-val_loss=0.61234.ckpt --name GN2vXX
    get_onnx_metadata logs/GN2_<stamp>/GN2vXX.onnx

Steps: rebuild the model from the run's config.yaml and load the checkpoint
(`salt.export.loading`); export the one-jet graph (`salt.export.wrapper`) with the TorchScript
exporter, pinned below; store the metadata (`salt.export.metadata`); run the parity check
(`salt.export.parity`). The file lands at ``--output`` (default ``<run>/<name>.onnx``) only when
the check passes; otherwise it is kept as ``<stem>.parity_failed.onnx`` for inspection and the
command exits with status 1. Problems with the input (paths, names) exit with status 2.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

EXAMPLE = """\
examples:
  to_onnx --ckpt_path logs/GN2_20250101-120000/ckpts/epoch=012-val_loss=0.61234.ckpt --name GN2vXX
  to_onnx --ckpt_path run/ckpts/x.ckpt --combine_outputs plight=pu+pg --rename pb:pbjet
  to_onnx --ckpt_path run/ckpts/x.ckpt --check run/GN2vXX.onnx      # re-check an existing file

inputs (float32, raw values; the graph normalises): jet_features (1, n_jet_vars),
track_features (n_tracks, n_track_vars). Outputs: <name>_p<class> (1,) float32,
<name>_TrackOrigin and <name>_VertexIndex (n_tracks,) int8. See get_onnx_metadata.
"""

# The exporter, pinned: TorchScript tracing (dynamo=False) exports GN2 in under a second and
# needs no onnxscript; the dynamo exporter (torch's default since 2.9) takes several times longer.
EXPORTER = {"dynamo": False, "opset_version": 17, "do_constant_folding": True}


def parse_args(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="to_onnx",
        description="Export a trained salt model to ONNX, one jet per call as ATLAS's C++ runs "
        "it, with the normalisation inside the graph and the metadata inside the file; then "
        "check the ONNX model against PyTorch on 1000 validation jets with 0-40 tracks "
        "(exit status 1 if any output differs by more than 1e-5 or is NaN).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by salt fit")
    parser.add_argument(
        "--name", help="model name: prefixes every output (default: the run's name)"
    )
    parser.add_argument(
        "--config", help="the run's config.yaml (default: <run>/config.yaml beside ckpts/)"
    )
    parser.add_argument(
        "--norm_dict",
        help="norm dict to build the model with when the configured one has moved (default: "
        "the config's, else the run folder's copy); the exported values are the checkpoint's",
    )
    parser.add_argument(
        "--track_selection",
        default="r22default",
        help="track selection the inputs follow, stored in the metadata (default: r22default)",
    )
    parser.add_argument(
        "--combine_outputs",
        nargs="+",
        action="extend",
        default=[],
        metavar="NEW=A+B",
        help="add an output that sums others, e.g. plight=pu+pg (names with or without the "
        "'<name>_' prefix; the summed outputs stay)",
    )
    parser.add_argument(
        "--rename",
        nargs="+",
        action="extend",
        default=[],
        metavar="OLD:NEW",
        help="rename an output, e.g. pb:pbottom (applied after --combine_outputs)",
    )
    parser.add_argument("--output", help="ONNX file to write (default: <run>/<name>.onnx)")
    parser.add_argument(
        "--val_file",
        "--data.val_file",
        dest="val_file",
        help="UPP file for the parity check (default: the run's validation file)",
    )
    parser.add_argument(
        "--parity_jets", type=int, default=1000, help="jets in the parity check (default: 1000)"
    )
    parser.add_argument(
        "--check",
        metavar="ONNX_FILE",
        help="do not export: run the parity check of an existing export of this checkpoint "
        "(name, combinations and renames are read from its metadata)",
    )
    ns = parser.parse_args(args)
    if ns.parity_jets < 1:
        parser.error("--parity_jets must be positive")
    return ns


def _session(model_bytes_or_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # one thread without spinning, as one jet per call needs: extra threads only wait (measured:
    # 1000 GN2 jets in 2.1 s with one thread, 5.1 s with onnxruntime's default pool, loaded CPU)
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes_or_path, options, providers=["CPUExecutionProvider"])


def _example_jet(pset, export_model) -> dict:
    """The feed of a jet with 2 to 7 constituents of every type, as near 7 as there are, and
    a different number of each type.

    The tracer may take an axis of size 0 or 1 for a constant (a jet without electrons would
    give a graph whose electron outputs are always empty), and may take two axes of one size for
    the same.
    """
    import numpy as np

    per_type = [pset.counts[o] for o in export_model.objects if o in pset.counts]
    if not per_type:
        return pset.jet_inputs(export_model, 0)
    counts = np.stack(per_type)
    distance = np.abs(np.minimum(counts, 7) - 7).sum(0) + 100 * (counts < 2).sum(0)
    # types of equal length could share one traced size
    distance += 10 * sum((counts[i] == counts[j]) for i in range(len(counts)) for j in range(i))
    return pset.jet_inputs(export_model, int(np.argmin(distance)))


def export_bytes(export_model, example: dict) -> bytes:
    """The ONNX model of `export_model` (an ExportModel), traced on one `example` jet."""
    import torch

    args = tuple(torch.from_numpy(example[name]) for name in export_model.input_names)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # silenced: the exporter's notice that it is the legacy one, and tracer warnings about
        # constants such as the head size in attention's 1/sqrt(d); whether the trace holds for
        # every track count is what the parity check then tests
        warnings.simplefilter("ignore")
        torch.onnx.export(
            export_model,
            args,
            buffer,
            input_names=export_model.input_names,
            output_names=export_model.plan.names,
            dynamic_axes=export_model.dynamic_axes(),
            **EXPORTER,
        )
    return buffer.getvalue()


def _git_hash() -> str | None:
    from ftag import git_check

    from salt.gitcheck import code_repo

    repo = code_repo()
    return git_check.get_git_hash(repo) if repo is not None else None


def _norm_mismatches(run) -> list[str]:
    """Variables whose norm dict values differ from the checkpoint's (which are exported)."""
    if run.norm_dict is None:
        return []
    import numpy as np

    from salt.data.yamldicts import load_norm_dict

    # readable: the model was built with it
    stats = load_norm_dict(run.norm_dict, run.model.variables, run.model.input_map)
    out = []
    for obj, norm in run.model.norms.items():
        for var, mean, std in zip(norm.variables, norm.mean.tolist(), norm.std.tolist()):
            want = np.float32(stats[obj][var][0]), np.float32(stats[obj][var][1])
            if (np.float32(mean), np.float32(std)) != want:
                out.append(f"{obj}.{var}")
    return out


def build_metadata(run, export_model, plan, ns, accepts_zero: bool) -> dict:
    """The file's metadata (see `salt.export.metadata`); normalisation from the model's buffers."""
    import torch

    import salt

    model = run.model
    inputs = []
    for obj, name in zip(export_model.objects, export_model.input_names):
        norm = model.norms[obj]
        n_vars = len(norm.variables)
        shape = [1, n_vars] if obj in export_model.jet_level else [f"n_{obj}", n_vars]
        variables = [
            {"name": v, "mean": m, "std": s}
            for v, m, s in zip(norm.variables, norm.mean.tolist(), norm.std.tolist())
        ]
        inputs.append(
            {
                "name": name,
                "object": obj,
                "dataset": model.input_map.get(obj, obj),
                "shape": shape,
                "dtype": "float32",
                "variables": variables,
            }
        )
    outputs = []
    for final in plan.names:
        source = plan.source_of(final)
        per_slot = source is not None and source.constituent is not None
        outputs.append(
            {
                "name": final,
                "shape": [f"n_{source.constituent}"] if per_slot else [1],
                "dtype": source.dtype if source is not None else "float32",
                "description": plan.description(final),
            }
        )
    return {
        "model_name": plan.prefix,
        "salt_version": salt.__version__,
        "git_hash": _git_hash(),
        "training_git_hash": run.metadata.get("git_hash"),
        "track_selection": ns.track_selection,
        "inputs": inputs,
        "outputs": outputs,
        "export": {
            "checkpoint": run.ckpt_path.name,
            "run": run.run_dir.name,
            "exporter": f"torch.onnx TorchScript (dynamo=False), opset {EXPORTER['opset_version']}",
            "torch": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "combine_outputs": plan.combine_args,
            "rename": plan.rename_args,
            "accepts_zero_tracks": accepts_zero,
        },
        "training_config": run.config_text,
    }


def _plan(run, name: str, combine: list[str], rename: list[str]):
    from salt.export.outputs import output_plan

    plan = output_plan(run.model, name)
    plan.add_combinations(combine)
    plan.add_renames(rename)
    return plan


def _check(run, export_model, session, val_file: Path, n_jets: int):
    """Parity set (with jets without tracks if the graph takes them), reference, comparison.

    Returns the ParityResult and whether the graph accepts jets without constituents.
    """
    from salt.export import parity

    data = run.config.get("data") or {}
    pset = parity.parity_set(val_file, run.model, n_jets, zero_constituents=True, data_config=data)
    zero = not pset.counts or parity.accepts_zero_constituents(session, export_model, pset)
    if not zero:
        pset = parity.parity_set(
            val_file, run.model, n_jets, zero_constituents=False, data_config=data
        )
    ref = parity.reference(run.model, pset, export_model.plan)
    onnx_values = parity.run_onnx(session, export_model, pset)
    return parity.compare(onnx_values, ref, pset, export_model.plan), zero


def check_existing(run, ns: argparse.Namespace) -> int:
    """``--check FILE``: the parity check of an earlier export of this checkpoint."""
    from salt.export.metadata import read_metadata
    from salt.export.wrapper import ExportModel

    meta = read_metadata(ns.check)
    options = meta.get("export") or {}
    name = meta.get("model_name") or run.name
    plan = _plan(run, name, options.get("combine_outputs", []), options.get("rename", []))
    export_model = ExportModel(run.model, plan)
    val_file = run.validation_file(ns.val_file)
    result, _ = _check(run, export_model, _session(str(ns.check)), val_file, ns.parity_jets)
    print(result.report())
    return 0 if result.passed else 1


def export(run, ns: argparse.Namespace) -> int:
    """Export, check, and write the file (or its ``.parity_failed`` twin); the exit status."""
    import onnx

    from salt.export.metadata import set_metadata
    from salt.export.parity import parity_set
    from salt.export.wrapper import ExportModel

    t0 = time.perf_counter()
    name = ns.name or run.name
    plan = _plan(run, name, ns.combine_outputs, ns.rename)
    out = Path(ns.output) if ns.output else run.run_dir / f"{name}.onnx"
    val_file = run.validation_file(ns.val_file)  # fail now, not after the export
    for var in _norm_mismatches(run):
        print(
            f"to_onnx: warning: {var} has another mean/std in {run.norm_dict} than in the "
            "checkpoint; the checkpoint's (the training's) values are exported.",
            file=sys.stderr,
        )
    export_model = ExportModel(run.model, plan)
    data = run.config.get("data") or {}
    example = _example_jet(parity_set(val_file, run.model, 41, data_config=data), export_model)
    model_bytes = export_bytes(export_model, example)
    t_export = time.perf_counter()

    result, zero = _check(run, export_model, _session(model_bytes), val_file, ns.parity_jets)
    t_check = time.perf_counter()
    print(result.report())
    if not zero:
        print("note: the exported graph refuses jets without tracks; the C++ side must skip them.")

    proto = onnx.load_from_string(model_bytes)
    meta = build_metadata(run, export_model, plan, ns, zero)
    meta["parity"] = result.as_dict()
    set_metadata(proto, meta)
    target = out if result.passed else out.with_name(f"{out.stem}.parity_failed.onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        print(f"Overwriting {target}")
    onnx.save(proto, str(target))
    print(
        f"Wrote {target} ({target.stat().st_size / 1e6:.1f} MB): exported in "
        f"{t_export - t0:.1f} s, checked in {t_check - t_export:.1f} s."
    )
    if not result.passed:
        print(
            f"to_onnx: error: the ONNX model differs from PyTorch (see above); it was kept as "
            f"{target} for inspection, and {out} was not written.",
            file=sys.stderr,
        )
        return 1
    print(f"Inspect with: get_onnx_metadata {target}")
    return 0


def main(args: list[str] | None = None) -> None:
    """Entry point of `to_onnx`."""
    ns = parse_args(args)
    from salt.errors import SaltError
    from salt.export.loading import load_run

    try:
        run = load_run(ns.ckpt_path, ns.config, ns.norm_dict)
        code = check_existing(run, ns) if ns.check else export(run, ns)
    except SaltError as err:
        print(f"to_onnx: error: {err}", file=sys.stderr)
        code = 2
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
