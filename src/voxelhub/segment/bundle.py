"""MONAI bundles run as their configs say, through MONAI's own config machinery.

A bundle folder holds ``configs/metadata.json``, ``configs/inference.json`` (or .yaml)
and ``models/model.pt`` (a state dict for ``network_def``) or ``models/model.ts``. The
``preprocessing``, ``network_def``, ``inferer`` and ``postprocessing`` of the inference
config are built by `monai.bundle.ConfigParser` exactly as the bundle defines them; the
inputs are handed to ``preprocessing`` as NIfTI files in a private temporary folder (in
``datalist`` form: one path, or one path per channel in ``channel_def`` order) and the
prediction after ``postprocessing`` (which inverts the preprocessing, e.g. `Invertd`) is
read back on the first input's grid. `SaveImaged` steps are left out: the caller writes
outputs where it wants them.

``pipeline="config"`` runs those steps exactly as configured (what the eager runtime does
by default: the reference); ``"fast"`` (the optimized runtimes' default) resamples in
float32, inverts `Spacingd` axis by axis and fuses a two-class softmax → invert → argmax
postprocessing (`voxelhub.segment.inference`), the same labels for less work.

A bundle's config can execute arbitrary Python (``$`` expressions, ``_target_``): run
bundles from people you do not trust only inside the platform's sandbox, as the platform
does for uploaded bundles. This module itself just runs what the bundle says.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK
import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms.post.array import AsDiscrete
from monai.utils.type_conversion import convert_to_dst_type

from voxelhub.segment.engine import Engine
from voxelhub.segment.errors import SegmentError
from voxelhub.segment.geometry import image_from_xyz
from voxelhub.segment.inference import (
    Activation,
    channel_argmax,
    discretize,
    fast_resampling,
    fused_postprocessing,
)
from voxelhub.segment.labels import coded_label
from voxelhub.segment.model import InputRole, ModelMetadata, SegmentationModel
from voxelhub.segment.runtimes import NetworkSource, PatchShape, cache_dir_for, file_digest

logger = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
REQUIRED_KEYS = ("preprocessing", "inferer", "postprocessing")


def is_bundle(path: Path) -> bool:
    """Whether `path` looks like a MONAI bundle folder."""
    return path.is_dir() and (path / "configs" / "metadata.json").is_file()


def read_metadata(root: Path) -> dict[str, Any]:
    path = root / "configs" / "metadata.json"
    try:
        document = json.loads(path.read_text())
    except OSError as err:
        raise SegmentError(
            f"cannot read the bundle metadata: {err.strerror}", source=str(path)
        ) from err
    except json.JSONDecodeError as err:
        raise SegmentError(
            f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})", source=str(path)
        ) from err
    if not isinstance(document, dict):
        raise SegmentError("the metadata must be a JSON object.", source=str(path))
    return document


def bundle_metadata(root: Path, document: Mapping[str, Any]) -> tuple[ModelMetadata, str, str]:
    """The model metadata of a bundle, and its input and output keys ("image", "pred")."""
    where = str(root / "configs" / "metadata.json")
    data_format = document.get("network_data_format")
    if not isinstance(data_format, dict) or not data_format.get("inputs"):
        raise SegmentError(
            "key 'network_data_format.inputs' is missing; it names the input "
            "(e.g. 'image') with its modality and channels.",
            source=where,
        )
    if not data_format.get("outputs"):
        raise SegmentError(
            "key 'network_data_format.outputs' is missing; it names the output "
            "(e.g. 'pred') and its channel_def.",
            source=where,
        )
    input_key, spec = next(iter(data_format["inputs"].items()))
    output_key, out_spec = next(iter(data_format["outputs"].items()))
    modality = str(spec.get("modality") or "") or None
    channels = spec.get("channel_def") or {}
    count = int(spec.get("num_channels") or len(channels) or 1)
    roles = [
        str(
            channels.get(str(i)) or (modality or "image")
            if count == 1
            else channels.get(str(i), f"channel{i}")
        ).lower()
        for i in range(count)
    ]
    outputs = out_spec.get("channel_def") or {}
    if not outputs:
        raise SegmentError(
            f"key 'network_data_format.outputs.{output_key}.channel_def' is "
            "missing; it names the labels.",
            source=where,
        )
    named = {int(k): str(v) for k, v in outputs.items()}
    with_background = str(named.get(0, "")).lower() == "background"
    labels = tuple(
        coded_label(channel if with_background else channel + 1, name)
        for channel, name in sorted(named.items())
        if not (with_background and channel == 0)
    )
    metadata = ModelMetadata(
        name=str(document.get("name") or root.name),
        version=str(document.get("version") or "0"),
        modality=modality,
        description=str(document.get("description") or ""),
        inputs=tuple(InputRole(role=role, modality=modality) for role in roles),
        labels=labels,
        extra={"bundle": str(root), "multi_label": not with_background},
    )
    return metadata, str(input_key), str(output_key)


class BundleModel(SegmentationModel):
    """A MONAI bundle folder; see the module docstring for what runs and how."""

    def __init__(
        self,
        root: Path,
        *,
        runtime: str = "auto",
        device: str = "cpu",
        sw_batch_size: int | None = None,
        pipeline: Literal["config", "fast"] | None = None,
    ) -> None:
        from monai.bundle.config_parser import ConfigParser

        self.root = root
        self.metadata, self.input_key, self.output_key = bundle_metadata(root, read_metadata(root))
        self.config_path = _config_path(root)
        parser = ConfigParser()
        try:
            parser.read_config(str(self.config_path))
        except Exception as err:
            raise SegmentError(
                f"cannot parse the config ({type(err).__name__}: {err})",
                source=str(self.config_path),
            ) from err
        parser["bundle_root"] = str(root)
        parser["device"] = f"$torch.device({device!r})"
        self.parser = parser
        for key in REQUIRED_KEYS:
            if key not in parser.config:  # type: ignore[operator]
                raise SegmentError(
                    f"key {key!r} is missing; a bundle's inference config "
                    f"defines {', '.join(REQUIRED_KEYS)} and network_def.",
                    source=str(self.config_path),
                )
        self.preprocessing = self._parsed("preprocessing")
        self.inferer = self._parsed("inferer")
        self.postprocessing = _without_saving(self._parsed("postprocessing"))
        self.pipeline = pipeline or ("config" if runtime == "eager" else "fast")
        if self.pipeline == "fast":
            fast_resampling(self.preprocessing)
            fused = fused_postprocessing(self.postprocessing, self.output_key)
            self.postprocessing = fused or self.postprocessing
        if sw_batch_size is not None:
            self.inferer.sw_batch_size = sw_batch_size
        network, weights = self._network()
        roi = tuple(int(v) for v in self.inferer.roi_size)
        self.multi_label = bool(self.metadata.extra.get("multi_label"))
        activation: Activation = "sigmoid" if self.multi_label else "softmax"
        digest = file_digest(weights, self.config_path)
        self.engine = Engine(
            NetworkSource(
                module=network,
                onnx_path=None,
                digest=digest,
                cache_dir=cache_dir_for(weights.parent, digest),
            ),
            PatchShape(
                len(self.metadata.inputs), (roi[0], roi[1], roi[2]), int(self.inferer.sw_batch_size)
            ),
            runtime=runtime,
            device=device,
            activation=activation,
            values=[label.value for label in self.metadata.labels],
        )

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return self.engine.runtime

    def _parsed(self, key: str) -> Any:
        try:
            return self.parser.get_parsed_content(key, instantiate=True)
        except Exception as err:
            detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise SegmentError(
                f"key {key!r} cannot be built: {type(err).__name__}: {detail}",
                source=str(self.config_path),
            ) from err

    def _network(self) -> tuple[torch.nn.Module, Path]:
        models = self.root / "models"
        state_path, script_path = models / "model.pt", models / "model.ts"
        if state_path.is_file():
            key = "network_def" if "network_def" in self.parser.config else "network"  # type: ignore[operator]
            network = self._parsed(key)
            try:
                state = torch.load(state_path, map_location="cpu", weights_only=True)
                if (
                    isinstance(state, dict)
                    and "model" in state
                    and isinstance(state["model"], dict)
                ):
                    state = state["model"]
                network.load_state_dict(state)
            except Exception as err:
                raise SegmentError(
                    f"the weights do not load into {key!r}: {str(err).splitlines()[0]}",
                    source=str(state_path),
                ) from err
            return network.eval(), state_path
        if script_path.is_file():
            try:
                return torch.jit.load(str(script_path), map_location="cpu").eval(), script_path  # type: ignore[no-untyped-call]
            except Exception as err:
                raise SegmentError(
                    f"is not a TorchScript model torch can load: {err}", source=str(script_path)
                ) from err
        raise SegmentError(
            "the bundle has no models/model.pt or models/model.ts.", source=str(self.root)
        )

    def _segment(self, images: list[SimpleITK.Image]) -> SimpleITK.Image:
        with tempfile.TemporaryDirectory(prefix="voxelhub-bundle-") as folder:
            paths = []
            for index, image in enumerate(images):
                path = Path(folder) / f"input{index}.nii"
                SimpleITK.WriteImage(image, str(path))
                paths.append(str(path))
            data: dict[str, Any] = {self.input_key: paths[0] if len(paths) == 1 else paths}
            data = self.preprocessing(data)
            volume = data[self.input_key]
            predictor = self.engine.predictor(volume.as_subclass(torch.Tensor))
            with torch.inference_mode():
                prediction = self.inferer(volume[None], predictor)
            data[self.output_key] = prediction[0]
            data = self.postprocessing(data)
        return self._labels(data[self.output_key], images[0])

    def _labels(self, prediction: Any, grid: SimpleITK.Image) -> SimpleITK.Image:
        array = np.asarray(torch.as_tensor(prediction).detach().cpu().float().numpy())
        if array.ndim == 3:
            array = array[None]
        if array.shape[1:] != grid.GetSize():  # type: ignore[no-untyped-call]
            raise SegmentError(
                f"the postprocessed prediction has shape {array.shape[1:]}, not the input's "
                f"{grid.GetSize()}; the postprocessing must invert the preprocessing "  # type: ignore[no-untyped-call]
                "(e.g. with Invertd).",
                source=str(self.config_path),
            )
        if array.shape[0] == 1:
            labels = np.rint(array[0]).astype(np.uint8)
        elif self.multi_label:
            labels = discretize(array, "sigmoid", [label.value for label in self.metadata.labels])
        else:
            labels = discretize(array, "softmax")
        return image_from_xyz(labels, grid)


def _config_path(root: Path) -> Path:
    for name in CONFIG_NAMES:
        if (root / "configs" / name).is_file():
            return root / "configs" / name
    raise SegmentError(
        f"the bundle has no configs/{' or configs/'.join(CONFIG_NAMES)}.", source=str(root)
    )


def _without_saving(postprocessing: Any) -> Any:
    """The postprocessing Compose without SaveImage(d) steps, its argmax done fast.

    An `AsDiscrete(d)` step keeps its settings; only how its argmax over channels is
    computed changes (`ChannelArgmaxDiscrete`, the same result).
    """
    from monai.transforms.compose import Compose
    from monai.transforms.io.array import SaveImage
    from monai.transforms.io.dictionary import SaveImaged
    from monai.transforms.post.dictionary import AsDiscreted

    if not isinstance(postprocessing, Compose):
        return postprocessing
    kept = []
    for step in postprocessing.transforms:
        if isinstance(step, SaveImage | SaveImaged):
            continue
        if type(step) is AsDiscreted and type(step.converter) is AsDiscrete:
            step.converter = fast_discrete(step.converter)
            kept.append(step)
        elif type(step) is AsDiscrete:
            kept.append(fast_discrete(step))
        else:
            kept.append(step)
    return Compose(kept)


def fast_discrete(converter: Any) -> Any:
    """A `ChannelArgmaxDiscrete` with the settings of MONAI's `AsDiscrete` `converter`."""
    fast = ChannelArgmaxDiscrete(
        argmax=converter.argmax,
        to_onehot=converter.to_onehot,
        threshold=converter.threshold,
        rounding=converter.rounding,
    )
    fast.kwargs = dict(converter.kwargs)
    return fast


class ChannelArgmaxDiscrete(AsDiscrete):
    """MONAI's `AsDiscrete`, its argmax over channels by `channel_argmax` (same result)."""

    def __call__(
        self,
        img: Any,
        argmax: bool | None = None,
        to_onehot: int | None = None,
        threshold: float | None = None,
        rounding: str | None = None,
    ) -> Any:
        argmax = self.argmax if argmax is None else argmax
        if argmax and self.kwargs.get("dim", 0) == 0 and isinstance(img, torch.Tensor):
            raw = img.as_tensor() if isinstance(img, MetaTensor) else img
            index = channel_argmax(raw)
            if self.kwargs.get("keepdim", True):
                index = index[None]
            onehot = self.to_onehot if to_onehot is None else to_onehot
            # one_hot and rounding take the int64 torch.argmax gives; the rest any integer.
            wide = onehot is not None or (self.rounding if rounding is None else rounding)
            img, *_ = convert_to_dst_type(index, img, dtype=torch.int64 if wide else index.dtype)
            argmax = False
        return super().__call__(img, argmax, to_onehot, threshold, rounding)
