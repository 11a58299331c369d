"""SaltDataModule: the `data:` section of a config, from file names to dataloaders."""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from salt.data.dataset import JetDataset
from salt.data.h5files import FileSpec, check_readable, combine_files, open_h5, resolve_files
from salt.data.labeller import LabellerConfig
from salt.data.loader import SaltDataLoader, read_ahead
from salt.data.objects import OBJECTS
from salt.data.options import EXTRA_INPUTS, ReadOptions
from salt.data.parameters import ParameterSpec, check_parameter_values
from salt.data.sampler import BatchOrderSampler
from salt.data.targets import MultiTarget
from salt.data.tempcopy import (
    copy_destinations,
    copy_to_temp,
    register_for_cleanup,
    remove_now,
)
from salt.data.transforms import Transform
from salt.data.workers import auto_workers, die_with_parent, usable_cpus, worker_advice
from salt.errors import SaltError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class SaltDataModule(L.LightningDataModule):
    """Reads UPP-format files in weakly shuffled batches.

    Every check that can be made before training is made in `setup`: the files exist and are
    HDF5, their datasets and variables are there, the first `check_jets` jets hold finite inputs
    and labels inside their tasks' classes.

    Parameters
    ----------
    train_file, val_file, test_file
        One path, a glob or a list; several files are combined as one virtual dataset (no copy).
    norm_dict
        UPP's norm_dict.yaml; the model normalises its inputs with it.
    class_dict
        UPP's class_dict.yaml, for tasks with ``use_class_dict: true``.
    variables
        Input variables per object type, e.g. ``{jets: [pt_btagJes, ...], tracks: [d0, ...]}``.
        ``global`` (jet variables joined to the pooled jet representation) and ``parameters``
        (the inputs of a parameterised network) are read from the jet-level dataset.
    input_map
        Config name -> dataset name in the files, e.g. ``{tracks: consts}``. Entries for
        ``global`` and ``parameters`` are ignored: both always come from the jet-level dataset.
    global_object
        Config name of the jet-level object.
    batch_size
        Jets per batch.
    test_batch_size
        Jets per batch for `salt test` (default: batch_size).
    num_workers
        Dataloader worker processes (0: read in the training process, see `read_ahead`), or
        ``auto``: chosen from the CPUs this process may use (`auto_workers`: 0 on a CPU run,
        up to 15 on a GPU run), and logged.
    num_train, num_val, num_test
        Jets to use from each split (-1: all). More than the file holds: all of them, with a
        warning that says so. 0 is refused.
    num_inputs
        Read only the first n constituent slots, e.g. ``{tracks: 20}``.
    move_files_temp
        Copy the input files into this folder (e.g. /dev/shm/<user>) first and read the copies;
        they are removed when training ends, or when the process ends however it ends. Refused
        before copying if the folder lacks room.
    pin_memory, persistent_workers, prefetch_factor
        As in torch's DataLoader (pinning only applies when training on a GPU).
    read_ahead
        With ``num_workers: 0``, batches a background thread reads ahead of training
        (0: read in the training loop itself).
    test_suff
        Suffix for the prediction file of `salt test`.
    check_jets
        Jets of each split scanned before training for non-finite inputs and labels outside their
        task's classes (-1: all). Every batch is checked again when read.
    non_finite_to_num
        Read NaN and +-inf inputs as 0 (the default refuses them, naming variable and jet).
    selections
        Cuts per constituent type, ``{tracks: ["d0 < 3.5", "numberOfSCTHoles < 1.1"]}``:
        constituents failing any cut become padding (ftag's cut syntax; any variable of the
        dataset, inputs or not).
    transforms
        Transforms of the training inputs, applied in order, e.g. ``[{class_path:
        salt.data.transforms.GaussianNoise, init_args: {noise_params: [...]}}]``.
    labeller_config
        ``{use_labeller: true, class_names: [ftag flavours], require_labels: true}``: compute
        the jets' flavour_label from truth variables with atlas-ftag-tools' flavour cuts.
    multi_target
        Regression targets swapped (``target``) or built (``custom_target``) by a condition
        ``sel_label opp value``, from ``source``; entries apply in order.
    parameters
        ``{name: {train: [values], test: value, prob: [...]}}`` for ``variables.parameters``:
        jets whose value is not in train get one drawn from it while fitting; test uses test.
    mf_config
        The truth objects of a MaskFormer and the constituent label pointing at them,
        ``{object: {name, id_label, class_label, object_classes}, constituent: {name,
        id_label}}`` (`salt.data.objects`); tasks name the objects ``input_name: objects``.
    edge_constructors
        ``[{input_name: tracks, edge_features: [dR, kt, z, isSelfLoop, subjetIndex, mass]}]``:
        relations between the constituents of a jet that the model computes from their raw
        inputs (salt passes them to the model; the loader reads nothing for them).
    labels
        Label fields per object type. Derived from the tasks by `salt`; no need to set.
    label_classes
        Number of classes per classification label. Derived by `salt`; no need to set.
    label_maps
        ``{object: {label: {raw value: class index}}}`` from the tasks' label_map. Derived by
        `salt`; no need to set.
    """

    def __init__(
        self,
        train_file: FileSpec | None = None,
        val_file: FileSpec | None = None,
        test_file: FileSpec | None = None,
        norm_dict: str | None = None,
        class_dict: str | None = None,
        variables: dict[str, list[str]] | None = None,
        input_map: dict[str, str] | None = None,
        global_object: str = "jets",
        batch_size: int = 1000,
        test_batch_size: int | None = None,
        num_workers: int | Literal["auto"] = 0,
        num_train: int = -1,
        num_val: int = -1,
        num_test: int = -1,
        num_inputs: dict[str, int] | None = None,
        move_files_temp: str | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        read_ahead: int = 3,
        test_suff: str | None = None,
        check_jets: int = 100_000,
        non_finite_to_num: bool = False,
        selections: dict[str, list[str] | None] | None = None,
        transforms: list[Transform] | None = None,
        labeller_config: LabellerConfig | None = None,
        multi_target: list[MultiTarget] | None = None,
        parameters: dict[str, ParameterSpec] | None = None,
        mf_config: dict | None = None,
        edge_constructors: list[dict] | None = None,
        labels: dict[str, list[str]] | None = None,
        label_classes: dict[str, dict[str, int]] | None = None,
        label_maps: dict[str, dict[str, dict[int, int]]] | None = None,
    ):
        super().__init__()
        if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 0):
            raise SaltError(f"data.num_workers must be 0 or more, or auto; got {num_workers!r}.")
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.edge_constructors = edge_constructors or []
        self.norm_dict = norm_dict
        self.class_dict = class_dict
        self.variables = variables or {}
        self.input_map = input_map or {}
        self.global_object = global_object
        self.batch_size = batch_size
        self.test_batch_size = test_batch_size or batch_size
        self.num_workers = num_workers
        self.workers = 0 if num_workers == "auto" else num_workers  # resolved in setup
        self.workers_chosen: str | None = None  # what `auto` chose, logged once
        # deliver batches to this CUDA device (scripts without a trainer); None: the trainer's
        self.target_device: torch.device | str | None = None
        self.num_jets = {"train": num_train, "val": num_val, "test": num_test}
        self.num_inputs = num_inputs
        self.move_files_temp = move_files_temp
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.read_ahead = read_ahead
        self.test_suff = test_suff
        self.check_jets = check_jets
        self.labels = labels or {}
        self.label_classes = label_classes or {}
        self.read_options = {
            "non_finite_to_num": non_finite_to_num,
            "selections": selections,
            "transforms": transforms,
            "labeller_config": labeller_config,
            "label_maps": label_maps,
            "multi_target": multi_target,
            "parameters": parameters,
            "mf_config": mf_config,
        }
        # a wrong option fails now, before any file is opened; the files are checked in setup
        self.options = ReadOptions.parse(
            self.variables, self.labels, global_object, self.label_classes, **self.read_options
        )
        self.paths: dict[str, Path] = {}  # the file each split is read from (copy / virtual file)
        self.sources: dict[str, list[Path]] = {}  # the user's files behind it
        self.datasets: dict[str, JetDataset] = {}
        self.temp_paths: list[Path] = []  # copies and virtual files this module made

    # ----------------------------------------------------------------------------- files
    def resolve(self, splits: tuple[str, ...]) -> None:
        """Check and locate the files of `splits`; copy them to fast disk when asked to."""
        for split in splits:
            spec = self.files[split]
            if spec is None:
                raise SaltError(f"data.{split}_file is not set: pass --data.{split}_file PATH.")
            paths = resolve_files(spec, split)
            wanted = self._dataset_names()
            for path in paths:
                with open_h5(path, split) as f:
                    names = [k for k in f if k in wanted]
                check_readable(path, split, names)
            self.sources[split] = paths
        if self.move_files_temp:
            self._copy_to_temp(splits)
        for split in splits:
            if split not in self.paths:
                self.paths[split] = self._combine(self.sources[split], split)

    def _dataset_names(self) -> set[str]:
        names = {self.global_object, *self.variables, *self.labels} - set(EXTRA_INPUTS)
        input_map = dict(self.input_map)
        if self.options.objects is not None:
            names.add(OBJECTS)
            input_map[OBJECTS] = self.options.objects.dataset
        return {input_map.get(n, n) for n in names | {self.global_object}}

    def _combine(self, paths: list[Path], split: str) -> Path:
        if len(paths) == 1:
            return paths[0]
        path = combine_files(paths, split, names=sorted(self._dataset_names()))
        register_for_cleanup(path.parent)
        self.temp_paths.append(path.parent)
        return path

    def _copy_to_temp(self, splits: tuple[str, ...]) -> None:
        strategy = self.trainer.strategy if self.trainer is not None else None
        distributed = strategy is not None and strategy.world_size > 1
        # one folder name for all ranks (broadcast from rank 0), one copy per node
        name = f"salt_{uuid.uuid4().hex[:8]}"
        if distributed:
            name = strategy.broadcast(name, src=0)
        folder = Path(os.path.expandvars(os.path.expanduser(self.move_files_temp))) / name
        all_paths = [p for s in splits for p in self.sources[s]]
        if strategy is None or strategy.local_rank == 0:
            copies = copy_to_temp(all_paths, folder)
            self.temp_paths.append(folder)
        else:
            copies = copy_destinations(all_paths, folder)
        if distributed:
            strategy.barrier("salt_move_files_temp")
        i = 0
        for split in splits:
            n = len(self.sources[split])
            self.paths[split] = self._combine(copies[i : i + n], split)
            i += n

    # ----------------------------------------------------------------------------- datasets
    def make_dataset(self, split: str) -> JetDataset:
        """The JetDataset of `split`, read from `self.paths[split]` (see `resolve`)."""
        dataset = JetDataset(
            self.paths[split],
            variables=self.variables,
            labels=self.labels,
            batch_size=self.test_batch_size if split == "test" else self.batch_size,
            num_jets=self.num_jets[split],
            input_map=self.input_map,
            global_object=self.global_object,
            num_constituents=self.num_inputs,
            label_classes=self.label_classes,
            split=split,
            seed=self._seed(),
            **self.read_options,
        )
        for message in dataset.warnings:
            log.warning(message)
            warnings.warn(message, stacklevel=2)
        return dataset

    def preflight(self, split: str) -> None:
        """Read the first `check_jets` jets once: bad values fail here, before any training."""
        dataset = self.datasets[split]
        n_jets = dataset.num_jets if self.check_jets < 0 else min(self.check_jets, dataset.num_jets)
        if dataset.options.parameters and split != "test":
            with open_h5(dataset.filename, split) as f:
                jets = f[dataset.dataset_name(dataset.global_object)]
                check_parameter_values(jets, dataset.options.parameters, n_jets, dataset._where())
        for _ in read_ahead(dataset, range(-(-n_jets // dataset.batch_size))):
            pass
        # workers must open the file themselves; the main process reopens it when it reads
        dataset.close()

    def setup(self, stage: str) -> None:
        splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }.get(stage, ())
        splits = tuple(s for s in splits if s not in self.datasets)
        if not splits:
            return
        self.resolve(splits)
        for split in splits:
            self.datasets[split] = self.make_dataset(split)
            self.preflight(split)
        self._choose_workers()

    def teardown(self, stage: str) -> None:
        """Close the files and remove the temporary copies and virtual files made in `setup`."""
        for dataset in self.datasets.values():
            dataset.close()
        if self.temp_paths:
            for path in self.temp_paths:
                remove_now(path)
            self.temp_paths = []
            # what pointed at the removed files is rebuilt by the next setup
            self.datasets, self.paths = {}, {}

    def _on_gpu(self) -> bool:
        """Whether batches go to a GPU: a CUDA trainer, or no trainer on a machine with one."""
        if self.trainer is None:
            return torch.cuda.is_available()
        return type(self.trainer.accelerator).__name__ in ("CUDAAccelerator", "MPSAccelerator")

    def _cpus_per_process(self) -> int:
        # the training processes of one node share its CPUs
        per_node = getattr(self.trainer, "num_devices", 1) if self.trainer is not None else 1
        return max(usable_cpus() // max(int(per_node or 1), 1), 1)

    def _choose_workers(self) -> None:
        cpus, on_gpu = self._cpus_per_process(), self._on_gpu()
        if self.num_workers == "auto":
            if self.workers_chosen is None:
                self.workers = auto_workers(cpus, on_gpu)
                where = "a GPU" if on_gpu else "a CPU"
                read = f"{self.workers} worker processes"
                if not self.workers:
                    read = f"the training process ({self.read_ahead} batches read ahead)"
                self.workers_chosen = (
                    f"data.num_workers auto: training on {where} with {cpus} usable CPUs per "
                    f"process; reading in {read}."
                )
                log.info(self.workers_chosen)
            return
        advice = worker_advice(self.num_workers, cpus, on_gpu)
        if advice is not None:
            log.warning(advice)
            warnings.warn(advice, stacklevel=2)

    # ----------------------------------------------------------------------------- loaders
    def _seed(self) -> int:
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _loader(self, split: str, shuffle: bool) -> SaltDataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"call setup() before asking for the {split} dataloader")
        dataset = self.datasets[split]
        rank, world = 0, 1
        if self.trainer is not None and split != "test":
            rank, world = self.trainer.global_rank, self.trainer.world_size
        sampler = BatchOrderSampler(len(dataset), shuffle, self._seed(), rank, world)
        fit_loop = getattr(self.trainer, "fit_loop", None)
        if split == "train" and fit_loop is not None:
            # A run resumed at an epoch boundary makes its iterator before Lightning calls
            # set_epoch: start from the epoch the restored loop is in, not from 0.
            sampler.epoch = fit_loop.epoch_progress.current.processed
        workers = self.workers
        device = self._device()
        # pinned host memory only pays when the batch goes to a CUDA device
        on_gpu = torch.cuda.is_available() and (
            self._on_gpu() if device is None else device.type == "cuda"
        )
        progress = None
        if split == "train" and self.trainer is not None:
            trainer = self.trainer

            def progress() -> int:
                return trainer.fit_loop.epoch_loop.batch_progress.current.completed

        return SaltDataLoader(
            dataset,
            batch_size=None,  # the dataset returns whole batches
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory and on_gpu,
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            worker_init_fn=die_with_parent if workers > 0 else None,
            read_ahead=self.read_ahead,
            # a private generator keeps the loader from drawing on the global RNG, which
            # must feed only the model for runs and resumes to be bit-identical
            generator=torch.Generator().manual_seed(self._seed()),
            progress=progress,
            constituents=self._constituents(dataset, device),
            device=device,
        )

    def _device(self) -> torch.device | None:
        """The CUDA device batches are delivered to (`target_device`, else the trainer's)."""
        if self.target_device is not None:
            return torch.device(self.target_device)
        if self.trainer is None or type(self.trainer.accelerator).__name__ != "CUDAAccelerator":
            return None
        return self.trainer.strategy.root_device

    def _constituents(self, dataset: JetDataset, device: torch.device | None) -> list[str] | None:
        """The constituent types the model encodes together, for the batches' host sizes.

        The trainer's model says; without one, a batch that goes to a device gets the sizes of
        every constituent type with inputs (as SaltModel merges them), others none.
        """
        module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        known = getattr(getattr(module, "model", None), "constituents", None)
        if known is not None:
            return list(known)
        if device is None:
            return None
        return [n for n in dataset.num_slots if n in dataset.variables]

    def train_dataloader(self) -> SaltDataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> SaltDataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> SaltDataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> SaltDataLoader:
        return self._loader("test", shuffle=False)
