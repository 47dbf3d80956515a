"""Training a 3D U-Net on labelled volumes, written out as a MONAI bundle.

Pure compute: arrays in, a bundle folder out. The bundle follows the MONAI model zoo's layout
(`configs/metadata.json`, `configs/inference.json`, `models/model.pt`, `models/model.ts`,
`docs/README.md`), so `python -m monai.bundle run` and the platform's bundle loader both run
it. Training reads its data through the very preprocessing the bundle declares (loading,
orientation, spacing, intensity), so what the model saw in training is what it sees in use.

>>> import numpy as np
>>> image = np.zeros((8, 8, 8), np.float32)
>>> TrainingCase("a", image, image.astype(np.uint8), spacing=(1.0, 1.0, 1.0)).shape
(8, 8, 8)
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SPATIAL_DIMS = 3
_MIN_CASES = 2


class TrainingError(ValueError):
    """The training data or settings cannot train a model; the message says how to fix it."""


@dataclass(frozen=True, eq=False)
class TrainingCase:
    """One labelled volume: `image` and `label` are (slice, row, column) arrays.

    `spacing` is in millimetres in the same order (slice thickness first); label 0 is
    background and 1…N are the structures.
    """

    name: str
    image: npt.NDArray[Any]
    label: npt.NDArray[Any]
    _: KW_ONLY
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.image.ndim != SPATIAL_DIMS or self.image.shape != self.label.shape:
            raise TrainingError(
                f"case {self.name!r}: image {self.image.shape} and label {self.label.shape} "
                "must be 3D arrays of the same shape"
            )
        if not np.issubdtype(self.label.dtype, np.integer):
            raise TrainingError(
                f"case {self.name!r}: the label holds {self.label.dtype}, not integers"
            )
        if min(self.spacing) <= 0:
            raise TrainingError(f"case {self.name!r}: spacing {self.spacing} must be positive")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.image.shape)


@dataclass(frozen=True)
class TrainingSettings:
    """How to train. `roi` is the patch (and sliding window) size in voxels, (x, y, z)."""

    epochs: int = 30
    roi: tuple[int, int, int] = (32, 32, 32)
    channels: tuple[int, ...] = (8, 16, 32, 64)
    learning_rate: float = 1e-2
    samples_per_case: int = 4
    batch_size: int = 8
    validation_fraction: float = 0.2
    seed: int = 0
    intensity_range: tuple[float, float] | None = None  # e.g. a CT window in HU; else z-score
    labels: tuple[str, ...] = ()  # names of labels 1…N; default "label 1"…
    modality: str | None = None  # what the model segments (e.g. "CT"); checked on use
    device: str | None = None  # "cpu", "cuda"; default CUDA when present

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TrainingError(f"epochs must be at least 1, not {self.epochs}")
        stride = 2 ** (len(self.channels) - 1)
        if len(self.roi) != SPATIAL_DIMS or any(r < stride or r % stride for r in self.roi):
            raise TrainingError(
                f"roi {self.roi} must be three sizes, each a multiple of {stride} (the U-Net "
                f"halves the patch {len(self.channels) - 1} times), e.g. 32,32,32"
            )
        if not 0 < self.validation_fraction < 1:
            raise TrainingError("validation_fraction must lie between 0 and 1")


@dataclass(frozen=True)
class EpochResult:
    """One epoch: mean training loss and the validation Dice (mean over structures)."""

    epoch: int
    loss: float
    dice: float
    best: bool


@dataclass(frozen=True)
class TrainedBundle:
    """The bundle written, and how training went."""

    path: Path
    history: tuple[EpochResult, ...]
    best_dice: float
    best_epoch: int
    training_cases: tuple[str, ...]
    validation_cases: tuple[str, ...]


def split_cases(
    cases: Sequence[TrainingCase], *, fraction: float, seed: int
) -> tuple[list[TrainingCase], list[TrainingCase]]:
    """A seeded split into (training, validation); at least one case in each."""
    if len(cases) < _MIN_CASES:
        raise TrainingError(
            f"training needs at least {_MIN_CASES} labelled cases (one to train on, one to "
            f"validate), got {len(cases)}"
        )
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    n_val = min(len(cases) - 1, max(1, round(len(cases) * fraction)))
    return [cases[i] for i in order[n_val:]], [cases[i] for i in order[:n_val]]


def train_segmentation(
    cases: Sequence[TrainingCase],
    output_dir: Path,
    settings: TrainingSettings = TrainingSettings(),
    *,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainedBundle:
    """Train a U-Net on `cases` and write the best epoch's model as a bundle in `output_dir`."""
    import torch
    from monai.utils.misc import set_determinism

    training, validation = split_cases(
        cases, fraction=settings.validation_fraction, seed=settings.seed
    )
    n_labels = _label_count(cases)
    names = _label_names(settings.labels, n_labels)
    pixdim = _target_spacing(cases)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    set_determinism(seed=settings.seed)
    config = inference_config(settings, n_labels=n_labels, pixdim=pixdim)
    with tempfile.TemporaryDirectory(prefix="vxh-train-") as scratch:
        train_files = _write_cases(training, Path(scratch))
        val_files = _write_cases(validation, Path(scratch))
        state, history = _fit(
            train_files, val_files, config, settings, device=device, on_epoch=on_epoch
        )
    set_determinism(seed=None)
    best = max(history, key=lambda e: e.dice)
    metadata = bundle_metadata(settings, names=names, pixdim=pixdim, best=best, cases=len(cases))
    write_bundle(output_dir, config=config, metadata=metadata, state_dict=state)
    return TrainedBundle(
        path=output_dir,
        history=tuple(history),
        best_dice=best.dice,
        best_epoch=best.epoch,
        training_cases=tuple(c.name for c in training),
        validation_cases=tuple(c.name for c in validation),
    )


def _label_count(cases: Sequence[TrainingCase]) -> int:
    highest = max(int(c.label.max()) for c in cases)
    lowest = min(int(c.label.min()) for c in cases)
    if lowest < 0 or highest < 1:
        raise TrainingError(
            "the labels must hold 0 for background and 1…N for the structures; "
            f"found values from {lowest} to {highest}"
        )
    return highest


def _label_names(given: tuple[str, ...], n_labels: int) -> tuple[str, ...]:
    if given and len(given) != n_labels:
        raise TrainingError(f"{len(given)} label names given for {n_labels} labels in the masks")
    return given or tuple(f"label {i}" for i in range(1, n_labels + 1))


def _target_spacing(cases: Sequence[TrainingCase]) -> tuple[float, float, float]:
    """The median spacing as (x, y, z), the order MONAI's Spacingd takes after loading."""
    median = np.median(np.array([c.spacing for c in cases]), axis=0)
    return (float(median[2]), float(median[1]), float(median[0]))


def _write_cases(cases: Sequence[TrainingCase], folder: Path) -> list[dict[str, str]]:
    import SimpleITK as sitk  # noqa: N813 - the library's own spelling

    files = []
    for i, case in enumerate(cases):
        paths = {}
        for key, array in (("image", case.image.astype(np.float32)), ("label", case.label)):
            image = sitk.GetImageFromArray(np.ascontiguousarray(array))
            image.SetSpacing(tuple(float(s) for s in reversed(case.spacing)))  # type: ignore[no-untyped-call]
            path = folder / f"{key}-{i:04d}-{id(case)}.nii.gz"
            sitk.WriteImage(image, str(path))
            paths[key] = str(path)
        files.append(paths)
    return files


def inference_config(
    settings: TrainingSettings, *, n_labels: int, pixdim: tuple[float, float, float]
) -> dict[str, Any]:
    """configs/inference.json, in the model zoo's structure."""
    intensity: dict[str, Any] = (
        {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False}
        if settings.intensity_range is None
        else {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": settings.intensity_range[0],
            "a_max": settings.intensity_range[1],
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        }
    )
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_definition(settings, n_labels=n_labels),
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {
                    "_target_": "Spacingd",
                    "keys": "image",
                    "pixdim": list(pixdim),
                    "mode": "bilinear",
                },
                intensity,
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(settings.roi),
            "sw_batch_size": 4,
            "overlap": 0.25,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "meta_key_postfix": "meta_dict",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$numpy.uint8",
                    "separate_folder": False,
                    "resample": False,
                },
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$monai.utils.set_determinism(seed=123)"],
        "run": ["$@evaluator.run()"],
    }


def network_definition(settings: TrainingSettings, *, n_labels: int) -> dict[str, Any]:
    """The U-Net as a bundle config item (`monai.networks.nets.UNet`)."""
    return {
        "_target_": "UNet",
        "spatial_dims": SPATIAL_DIMS,
        "in_channels": 1,
        "out_channels": n_labels + 1,
        "channels": list(settings.channels),
        "strides": [2] * (len(settings.channels) - 1),
        "num_res_units": 2,
        "norm": "instance",
    }


def _transforms(config: dict[str, Any], settings: TrainingSettings, *, train: bool) -> Any:
    """The bundle's preprocessing applied to image and label, plus random patches to train."""
    from monai.bundle.config_parser import ConfigParser

    keys = ["image", "label"]
    steps = []
    for step in config["preprocessing"]["transforms"]:
        item = dict(step)
        if item["_target_"] in ("LoadImaged", "EnsureChannelFirstd", "Orientationd", "EnsureTyped"):
            item["keys"] = keys
        elif item["_target_"] == "Spacingd":
            item["keys"], item["mode"] = keys, ["bilinear", "nearest"]
        steps.append(item)
    if train:
        # Where the structures are is found once (and cached), not at every crop.
        steps.append({"_target_": "FgBgToIndicesd", "keys": "label"})
        steps.append(
            {
                "_target_": "RandCropByPosNegLabeld",
                "keys": keys,
                "label_key": "label",
                "fg_indices_key": "label_fg_indices",
                "bg_indices_key": "label_bg_indices",
                "spatial_size": list(settings.roi),
                "pos": 2,
                "neg": 1,
                "num_samples": settings.samples_per_case,
                "allow_smaller": True,
            }
        )
        steps.append({"_target_": "SpatialPadd", "keys": keys, "spatial_size": list(settings.roi)})
        steps.append({"_target_": "DeleteItemsd", "keys": ["label_fg_indices", "label_bg_indices"]})
    parser = ConfigParser({"transforms": {"_target_": "Compose", "transforms": steps}})
    return parser.get_parsed_content("transforms")


def _fit(
    train_files: list[dict[str, str]],
    val_files: list[dict[str, str]],
    config: dict[str, Any],
    settings: TrainingSettings,
    *,
    device: Any,
    on_epoch: Callable[[EpochResult], None] | None,
) -> tuple[dict[str, Any], list[EpochResult]]:
    import torch
    from monai.bundle.config_parser import ConfigParser
    from monai.data.dataloader import DataLoader
    from monai.data.dataset import CacheDataset
    from monai.losses.dice import DiceCELoss

    network = ConfigParser({"net": config["network_def"]}).get_parsed_content("net").to(device)
    train_data = CacheDataset(
        train_files, _transforms(config, settings, train=True), progress=False, num_workers=0
    )
    val_data = CacheDataset(
        val_files, _transforms(config, settings, train=False), progress=False, num_workers=0
    )
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        train_data,
        batch_size=max(1, settings.batch_size // settings.samples_per_case),
        shuffle=True,
        num_workers=0,
        generator=generator,
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate)
    history: list[EpochResult] = []
    best_state: dict[str, Any] = {}
    for epoch in range(1, settings.epochs + 1):
        network.train()
        losses = []
        for batch in loader:
            optimiser.zero_grad()
            loss = loss_fn(network(batch["image"].to(device)), batch["label"].to(device))
            loss.backward()
            optimiser.step()
            losses.append(float(loss.item()))
        dice = _validate(network, val_data, settings, device)
        best = not history or dice > max(e.dice for e in history)
        if best:
            best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        result = EpochResult(epoch, float(np.mean(losses)), dice, best)
        history.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return best_state, history


def _validate(network: Any, val_data: Any, settings: TrainingSettings, device: Any) -> float:
    """Mean Dice over the validation volumes and structures (background excluded)."""
    import torch
    from monai.inferers.utils import sliding_window_inference
    from monai.metrics.meandice import DiceMetric
    from monai.networks.utils import one_hot

    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    network.eval()
    with torch.inference_mode():
        for item in val_data:
            image = item["image"].unsqueeze(0).to(device)
            logits = torch.as_tensor(
                sliding_window_inference(image, settings.roi, 4, network, overlap=0.25)
            )
            classes = int(logits.shape[1])
            pred = one_hot(torch.argmax(logits, dim=1, keepdim=True), classes)
            truth = one_hot(item["label"].unsqueeze(0).to(device).long(), classes)
            metric(y_pred=pred, y=truth)
    aggregate = metric.aggregate()
    return float(torch.as_tensor(aggregate).item())


def bundle_metadata(
    settings: TrainingSettings,
    *,
    names: tuple[str, ...],
    pixdim: tuple[float, float, float],
    best: EpochResult,
    cases: int,
) -> dict[str, Any]:
    """configs/metadata.json, in the model zoo's structure."""
    import monai
    import torch

    channels = {"0": "background", **{str(i): n for i, n in enumerate(names, start=1)}}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "trained by voxelhub train segmentation"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {"nibabel": _version("nibabel")},
        "name": "voxelhub segmentation",
        "task": "Segmentation of " + ", ".join(names),
        "description": f"A 3D U-Net trained on {cases} labelled volumes; best validation "
        f"Dice {best.dice:.3f} at epoch {best.epoch}.",
        "authors": "voxelhub",
        "copyright": "",
        "data_source": "",
        "data_type": "nifti",
        "image_classes": "single channel image, resampled to spacing "
        + " x ".join(f"{p:g}" for p in pixdim)
        + " mm",
        "label_classes": ", ".join(f"{k}: {v}" for k, v in channels.items()),
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in channels.items()),
        "eval_metrics": {"mean_dice": round(best.dice, 4)},
        "intended_use": "Research use only",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if settings.modality == "CT" else "magnitude",
                    **({"modality": settings.modality} if settings.modality else {}),
                    "num_channels": 1,
                    "spatial_shape": list(settings.roi),
                    "dtype": "float32",
                    "value_range": list(settings.intensity_range or (-1, 1)),
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(channels),
                    "spatial_shape": list(settings.roi),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": channels,
                }
            },
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def write_bundle(
    output_dir: Path,
    *,
    config: dict[str, Any],
    metadata: dict[str, Any],
    state_dict: dict[str, Any],
) -> None:
    """Write the bundle's files: configs, the weights, and the TorchScript export."""
    import torch
    from monai.bundle.config_parser import ConfigParser
    from monai.data.torchscript_utils import save_net_with_metadata

    for sub in ("configs", "models", "docs"):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)
    inference = json.dumps(config, indent=2)
    (output_dir / "configs" / "inference.json").write_text(inference + "\n")
    (output_dir / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    torch.save(state_dict, output_dir / "models" / "model.pt")
    network = ConfigParser({"net": config["network_def"]}).get_parsed_content("net")
    network.load_state_dict(state_dict)
    network.eval()
    scripted = torch.jit.script(network)
    save_net_with_metadata(
        scripted,
        str(output_dir / "models" / "model"),
        include_config_vals=False,
        meta_values=metadata,
        more_extra_files={"inference.json": inference.encode()},
    )
    (output_dir / "docs" / "README.md").write_text(
        f"# {metadata['name']}\n\n{metadata['task']}.\n\n{metadata['description']}\n\n"
        "Run it with `python -m monai.bundle run --config_file configs/inference.json "
        "--dataset_dir DIR --output_dir OUT`, or upload it to voxelhub as an algorithm "
        "package.\n"
    )
