"""What an exported model says about itself, and the `get_onnx_metadata` command that reads it.

The metadata lives in the ONNX file (``metadata_props``: string keys and values; structured values
are JSON, the training config is its YAML text):

=====================  =======================================================================
``model_name``         the export's name (``--name``), prefix of every output
``inputs``             JSON list: per input its ``name``, ``object``, ``shape``, ``dtype`` and
                       ``variables`` in input-column order, each ``{name, mean, std}``: the
                       normalisation ``(x - mean) / std`` that the graph applies itself
``outputs``            JSON list: per output ``name``, ``shape``, ``dtype``, ``description``
``track_selection``    the track selection the inputs must follow (``--track_selection``)
``salt_version``       salt's version at export
``git_hash``           commit of the salt code that exported (``null`` outside a checkout)
``training_git_hash``  commit that trained, from the run's metadata.yaml
``training_config``    the run's config.yaml, verbatim
``export``             JSON: checkpoint, run folder, exporter and opset, torch version, time,
                       ``--combine_outputs`` and ``--rename`` as given, and whether the graph
                       accepts jets without tracks
``parity``             JSON: the parity check's verdict, jets, track counts, largest differences
=====================  =======================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from salt.errors import SaltError

JSON_KEYS = ("inputs", "outputs", "export", "parity")
ORDER = (
    "model_name", "salt_version", "git_hash", "training_git_hash", "track_selection",
    "inputs", "outputs", "export", "parity", "training_config",
)  # fmt: skip


def encode(metadata: dict) -> dict[str, str]:
    """Metadata values as the strings ONNX stores: JSON for structures, text as it is."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in metadata.items()
    }


def set_metadata(model_proto, metadata: dict) -> None:
    """Replace the ONNX model's metadata_props with `metadata`."""
    del model_proto.metadata_props[:]
    for key, value in encode(metadata).items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def decode(props: dict[str, str]) -> dict:
    out: dict = {}
    for key, value in props.items():
        if key in JSON_KEYS or key.endswith("git_hash"):
            try:
                out[key] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def read_metadata(path: str | Path) -> dict:
    """The metadata of an ONNX file, JSON values decoded."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise SaltError(f"'{path}' does not exist.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise SaltError(f"'{path}' is not an ONNX model: {err}") from None
    return decode({p.key: p.value for p in model.metadata_props})


def format_metadata(meta: dict, show_config: bool = False) -> str:
    """A readable summary of `meta` (as `read_metadata` returns it)."""
    head = {k: meta[k] for k in ORDER[:5] if k in meta}
    head.update({k: meta[k] for k in meta if k not in ORDER})
    export = meta.get("export") or {}
    head.update({k: v for k, v in export.items() if v not in (None, [], "")})
    width = max((len(k) for k in head), default=0) + 2
    lines = [f"{key + ':':<{width}}{value}" for key, value in head.items()]
    for item in meta.get("inputs") or []:
        shape = ", ".join(str(s) for s in item.get("shape", []))
        lines.append(f"\ninput {item['name']} ({shape}) {item.get('dtype', '')}: {item['object']}")
        variables = item.get("variables", [])
        # columns as wide as their longest entry: a long name never runs into the next column
        w = _width([v["name"] for v in variables], "variable")
        lines.append(f"  {'#':>3}  {'variable':<{w}}{'mean':>14}{'std':>14}")
        for i, var in enumerate(variables):
            lines.append(f"  {i:>3}  {var['name']:<{w}}{var['mean']:>14.6g}{var['std']:>14.6g}")
    outputs = meta.get("outputs") or []
    if outputs:
        lines.append("\noutputs:")
        w = _width([item["name"] for item in outputs])
        wt = _width([item.get("dtype", "") for item in outputs])
        for item in outputs:
            shape = ", ".join(str(s) for s in item.get("shape", []))
            lines.append(
                f"  {item['name']:<{w}}{item.get('dtype', ''):<{wt}}({shape})  "
                f"{item.get('description', '')}"
            )
    parity = meta.get("parity")
    if parity:
        verdict = "passed" if parity.get("passed") else "FAILED"
        lo, hi = parity.get("constituent_counts", [0, 0])
        lines.append(
            f"\nparity check {verdict}: {parity.get('jets')} jets of {parity.get('file')}, "
            f"{lo}-{hi} tracks, tolerance {parity.get('tolerance')}"
        )
        diffs = parity.get("max_abs_diff") or {}
        w = _width(list(diffs))
        for name, diff in diffs.items():
            lines.append(f"  {name:<{w}}{diff:.2e}")
    config = meta.get("training_config")
    if config:
        if show_config:
            lines.append("\ntraining config:\n" + config.rstrip())
        else:
            lines.append(
                f"\ntraining config: {len(config.splitlines())} lines (show with --config)"
            )
    return "\n".join(lines)


def _width(cells: list[str], *more: str) -> int:
    """Width of a column holding `cells` (and headers `more`), two spaces included."""
    return max((len(c) for c in [*cells, *more]), default=0) + 2


def main(args: list[str] | None = None) -> None:
    """Entry point of `get_onnx_metadata`."""
    parser = argparse.ArgumentParser(
        prog="get_onnx_metadata",
        description="Print the metadata that `to_onnx` stored in an ONNX model: model name, "
        "input variables in order with their normalisation, outputs, track selection, salt "
        "version and git hash, the parity check's result and the training config.",
        epilog="example:\n  get_onnx_metadata logs/GN2_20250101-120000/GN2vXX.onnx\n"
        "  get_onnx_metadata GN2vXX.onnx --json | jq '.inputs[1].variables[0]'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("onnx_file", help="an ONNX model written by to_onnx")
    parser.add_argument("--json", action="store_true", help="print all metadata as one JSON object")
    parser.add_argument("--config", action="store_true", help="also print the training config")
    parser.add_argument("--key", help="print only this metadata entry (e.g. inputs)")
    ns = parser.parse_args(args)
    try:
        meta = read_metadata(ns.onnx_file)
        if not meta:
            raise SaltError(f"'{ns.onnx_file}' holds no metadata: was it written by to_onnx?")
        if ns.key is not None:
            if ns.key not in meta:
                raise SaltError(f"no metadata entry '{ns.key}'; there are: {', '.join(meta)}.")
            meta = {ns.key: meta[ns.key]}
            if not ns.json:
                value = meta[ns.key]
                print(value if isinstance(value, str) else json.dumps(value, indent=2))
                return
    except SaltError as err:
        print(f"get_onnx_metadata: error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        print(json.dumps(meta, indent=2) if ns.json else format_metadata(meta, ns.config))
    except BrokenPipeError:  # `get_onnx_metadata x.onnx | head`: the reader has what it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
