"""PredictionWriter: `salt test` writes the model's outputs beside the checkpoint for puma and ftag.

File: ``<ckpt dir>/<ckpt stem>__test_<sample>[_<test_suff>].h5`` (sample from the test file name:
``pp_output_test_ttbar.h5`` -> ``ttbar``), written with ftag's H5Writer (LZ4), rows in test-file
order. See FORMAT.md §4 for what each field means.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

from salt.callbacks.object_outputs import object_fields, track_fields
from salt.data.h5files import open_h5
from salt.errors import SaltError
from salt.export.outputs import output_fields

log = logging.getLogger(__name__)

DEFAULT_JET_VARS = [
    "pt", "eta", "mass", "pt_btagJes", "eta_btagJes", "n_tracks", "flavour_label",
    "HadronConeExclTruthLabelID", "HadronConeExclExtendedTruthLabelID",
    "HadronConeExclTruthLabelPt", "HadronConeExclTruthLabelLxy", "eventNumber", "mcEventWeight",
    "R10TruthLabel_R22v1", "GhostBHadronsFinalCount", "GhostCHadronsFinalCount",
]  # fmt: skip
DEFAULT_TRACK_VARS = [
    "valid", "ftagTruthOriginLabel", "ftagTruthVertexIndex", "ftagTruthTypeLabel",
    "d0", "z0SinTheta", "IP3D_signed_d0_significance", "IP3D_signed_z0_significance",
]  # fmt: skip


def sample_name(test_file: str | Path) -> str:
    """``pp_output_test_ttbar`` -> ``ttbar``; any other stem is used whole."""
    stem = Path(test_file).stem
    parts = stem.split("_")
    return parts[3] if len(parts) == 4 else stem


def output_path(ckpt_path: str | Path, test_file: str | Path, suffix: str | None = None) -> Path:
    ckpt_path = Path(ckpt_path)
    suff = f"_{suffix}" if suffix else ""
    return ckpt_path.parent / f"{ckpt_path.stem}__test_{sample_name(test_file)}{suff}.h5"


class PredictionWriter(Callback):
    """Writes `salt test` predictions, then a performance report beside them.

    Parameters
    ----------
    write_tracks
        Also write a ``tracks`` dataset: track-origin probabilities, the arg-max origin and the
        predicted vertex index (as ``<name>_aux_TrackOrigin`` / ``<name>_aux_VertexIndex``, the
        names puma's AuxResults reads), plus the track variables of `extra_vars`.
    write_objects
        For a model with a mask decoder (MaskFormer): also write an ``objects`` dataset, one row
        per object query of each jet (class probabilities, regressed properties, predicted
        class and index), and with `write_tracks` each track's object index
        (``<name>_aux_ObjectIndex``); see salt.callbacks.object_outputs.
    half_precision
        Store floats as float16 (ftag H5Writer's ``precision="half"``).
    extra_vars
        Variables copied from the test file per object, e.g. ``{jets: [pt, eta], tracks: [d0]}``.
        Default: the jet kinematics, truth labels and track count; for tracks the truth labels,
        `valid` and impact parameters (whichever the file has).
    report
        Make the ROC/working-point report (salt.evaluation.report) after writing.
    fc, ftau
        Fractions of the b-tagging discriminant in the report.
    ftop, fhcc
        Fractions of the Higgs-tagging discriminant (D_Hbb) in the report.
    """

    def __init__(
        self,
        write_tracks: bool = False,
        write_objects: bool = False,
        half_precision: bool = False,
        extra_vars: dict[str, list[str]] | None = None,
        report: bool = True,
        fc: float = 0.2,
        ftau: float = 0.01,
        ftop: float = 0.25,
        fhcc: float = 0.02,
    ):
        super().__init__()
        self.write_tracks = write_tracks
        self.write_objects = write_objects
        self.half_precision = half_precision
        self.extra_vars = extra_vars or {}
        self.report = report
        self.fc, self.ftau = fc, ftau
        self.ftop, self.fhcc = ftop, fhcc
        self.path: Path | None = None

    def on_test_start(self, trainer, pl_module) -> None:
        data = trainer.datamodule
        self.dataset = data.datasets["test"]
        self.model = pl_module.model
        self.name = pl_module.name
        if self.write_objects and getattr(self.model, "objects", None) is None:
            raise SaltError(
                "PredictionWriter write_objects: true needs a model with a mask_decoder; set "
                "write_objects: false."
            )
        if trainer.ckpt_path is None:
            raise RuntimeError("PredictionWriter needs the checkpoint path to name its output")
        self.path = output_path(trainer.ckpt_path, data.sources["test"][0], data.test_suff)
        # named before the test loop: a clash of names stops here, not after the inference
        self.fields = output_fields(self.model, self.name, for_file=True)
        self.outputs: list[dict] = []
        self.valid: list[np.ndarray] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.outputs.append(
            {t: {k: v.detach().cpu().numpy() for k, v in d.items()} for t, d in outputs.items()}
        )
        tracks = self._tracks_name()
        if tracks is not None:
            self.valid.append(batch["valid"][tracks].cpu().numpy())

    def _tracks_name(self) -> str | None:
        names = self.model.constituents
        if not names:
            return None
        return "tracks" if "tracks" in names else names[0]

    def _collect(self, task: str, key: str) -> np.ndarray:
        return np.concatenate([o[task][key] for o in self.outputs])

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or self.path is None:
            return
        n_jets = self.dataset.num_jets
        jet_fields = self._jet_outputs()
        jets = self._with_extras(self.model.global_object, n_jets, DEFAULT_JET_VARS, jet_fields)
        arrays = {"jets": jets}
        track_extra: dict[str, np.ndarray] = {}
        if self.write_objects:
            arrays["objects"], track_extra = object_fields(
                self.model, self.name, self.fields, self._collect
            )
            if self.model.objects.constituent != self._tracks_name():
                track_extra = {}  # the object index follows the decoder's own constituents
        tracks_name = self._tracks_name()
        if self.write_tracks and tracks_name is not None:
            valid = np.concatenate(self.valid)
            fields = self._track_outputs(valid) | track_fields(track_extra, valid)
            arrays["tracks"] = self._with_extras(tracks_name, n_jets, DEFAULT_TRACK_VARS, fields)
        self._write(arrays)
        if self.report:
            self._report()

    # ----------------------------------------------------------------------------- fields
    def _jet_outputs(self) -> dict[str, np.ndarray]:
        """`(N,)` float32 per jet-level output, named by `salt.export.outputs.output_fields`."""
        fields: dict[str, np.ndarray] = {}
        for source in self.fields:
            if source.constituent is None:
                values = self._collect(source.task, source.key)
                fields[source.name] = values[:, source.column].astype(np.float32)
        return fields

    def _track_outputs(self, valid: np.ndarray) -> dict[str, np.ndarray]:
        """`(N, T)` per track-level output: probabilities (float32, 0 in padding), regressed
        values (float32, NaN in padding), classes and vertex indices (int32, -1 in padding).
        `valid` is `(N, T)` bool."""
        fields: dict[str, np.ndarray] = {}
        for source in self.fields:
            if source.constituent != self._tracks_name():
                continue
            packed = self._collect(source.task, source.key)  # (n_valid, ...) over the file
            if source.column is not None:
                packed = packed[:, source.column]
            if source.dtype == "float32":
                out = np.full(valid.shape, 0.0 if source.key == "probs" else np.nan, np.float32)
            else:
                out = np.full(valid.shape, -1, np.int32)
            out[valid] = packed
            fields[source.name] = out
        return fields

    def _with_extras(self, name, n_jets, defaults, fields) -> np.ndarray:
        """Structured array: the chosen test-file variables of `name`, then the model outputs."""
        with open_h5(self.dataset.filename, "test") as f:
            ds = f[self.dataset.dataset_name(name)]
            available = ds.dtype.names or ()
            wanted = self.extra_vars.get(name)
            if wanted is None:
                wanted = [v for v in defaults if v in available]
            missing = [v for v in wanted if v not in available]
            if missing:
                raise ValueError(f"extra_vars.{name}: the test file has no {missing}")
            wanted = [v for v in wanted if v not in fields]
            extras = None
            if wanted:
                rows = np.s_[:n_jets]
                if ds.ndim == 2:
                    rows = np.s_[:n_jets, : self.dataset.num_slots[name]]
                extras = ds.fields(wanted)[rows]
        shape = next(iter(fields.values())).shape if fields else (n_jets,)
        dtype = [(v, extras.dtype[v]) for v in wanted] if extras is not None else []
        dtype += [(k, v.dtype) for k, v in fields.items()]
        out = np.empty(shape, dtype)
        for v in wanted:
            out[v] = extras[v]
        for k, v in fields.items():
            out[k] = v
        return out

    # ----------------------------------------------------------------------------- output
    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        from ftag.hdf5 import H5Writer

        if self.path.exists():
            print(f"Overwriting {self.path}")
        writer = H5Writer(
            dst=self.path,
            dtypes={k: v.dtype for k, v in arrays.items()},
            shapes={k: v.shape for k, v in arrays.items()},
            shuffle=False,
            precision="half" if self.half_precision else "full",
            compression="lz4",
        )
        writer.write(arrays)
        writer.close()
        print(f"Wrote {len(arrays['jets']):,} jets to {self.path}")

    def _report(self) -> None:
        from salt.evaluation.report import make_report

        try:
            make_report(
                [self.path],
                taggers=[self.name],
                fc=self.fc,
                ftau=self.ftau,
                ftop=self.ftop,
                fhcc=self.fhcc,
            )
        except Exception as err:  # the predictions are written: a plot failure must not hide them
            log.warning("report for %s failed: %s", self.path, err)
