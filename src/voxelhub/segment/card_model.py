"""Plain TorchScript and ONNX networks run as their model card says."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK
import torch

from voxelhub.segment.card import ModelCard, read_card
from voxelhub.segment.engine import Engine
from voxelhub.segment.errors import SegmentError
from voxelhub.segment.geometry import (
    image_from_xyz,
    reorient,
    resample_like,
    resample_to_spacing,
    to_channels_xyz,
)
from voxelhub.segment.inference import activate, discretize, sliding_window
from voxelhub.segment.model import SegmentationModel
from voxelhub.segment.runtimes import NetworkSource, PatchShape, cache_dir_for, file_digest

TORCHSCRIPT_SUFFIXES = (".ts", ".pt", ".pth", ".jit")


class CardModel(SegmentationModel):
    """A TorchScript (.ts/.pt) or ONNX (.onnx) network described by a model card."""

    def __init__(
        self,
        model_path: Path,
        card: ModelCard | Path,
        *,
        runtime: str = "auto",
        device: str = "cpu",
        sw_batch_size: int | None = None,
    ) -> None:
        self.card = card if isinstance(card, ModelCard) else read_card(card)
        self.metadata = self.card.metadata()
        self.path = model_path
        digest = file_digest(model_path)
        source = NetworkSource(
            module=_torchscript(model_path) if model_path.suffix != ".onnx" else None,
            onnx_path=model_path if model_path.suffix == ".onnx" else None,
            digest=digest,
            cache_dir=cache_dir_for(model_path.parent, digest),
        )
        if runtime not in ("auto", *source.runtimes):
            kind = "an ONNX file" if source.module is None else "a TorchScript file"
            raise SegmentError(
                f"runtime {runtime!r} cannot run {kind}; use {', '.join(source.runtimes)} or auto.",
                source=str(model_path),
            )
        window = self.card.window()
        if sw_batch_size is not None:
            window = replace(window, sw_batch_size=sw_batch_size)
        self.window = window
        self.engine = Engine(
            source,
            PatchShape(len(self.metadata.inputs), window.roi, window.sw_batch_size),
            runtime=runtime,
            device=device,
            activation=self.card.output,
            values=[label.value for label in self.metadata.labels],
        )

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return self.engine.runtime

    def _segment(self, images: list[SimpleITK.Image]) -> SimpleITK.Image:
        grid = resample_to_spacing(reorient(images[0], self.card.orientation), self.card.spacing)
        network_images = [
            resample_like(reorient(image, self.card.orientation), grid) for image in images
        ]
        volume = self._intensity(to_channels_xyz(network_images))
        logits = sliding_window(
            volume, self.engine.predictor(volume), self.window, device=self.engine.device
        )
        probabilities = activate(logits, self.card.output).cpu().numpy()
        back = [
            resample_like(image_from_xyz(channel.astype(np.float32), grid), images[0])
            for channel in probabilities
        ]
        stacked = np.stack([SimpleITK.GetArrayViewFromImage(image) for image in back])
        labels = discretize(
            stacked, self.card.output, [label.value for label in self.metadata.labels]
        )
        result = SimpleITK.GetImageFromArray(labels)
        result.CopyInformation(images[0])  # type: ignore[no-untyped-call]
        return result

    def _intensity(self, volume: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        intensity = self.card.intensity
        if intensity is None:
            return volume
        if intensity.window is not None:
            low, high = intensity.window
            scaled = (volume - low) / (high - low)
            return np.clip(scaled, 0.0, 1.0) if intensity.clip else scaled
        out = volume.copy()
        for channel in out:
            mask = channel != 0 if intensity.normalize == "nonzero" else np.ones_like(channel, bool)
            if mask.any():
                values = channel[mask]
                std = float(values.std())
                channel[mask] = (values - values.mean()) / (std if std > 0 else 1.0)
        return out


def _torchscript(path: Path) -> torch.nn.Module:
    if path.suffix not in TORCHSCRIPT_SUFFIXES:
        raise SegmentError(
            f"unknown model format {path.suffix!r}; give a TorchScript file "
            f"({', '.join(TORCHSCRIPT_SUFFIXES)}) or an ONNX file (.onnx).",
            source=str(path),
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as err:
        raise SegmentError(
            f"is not a TorchScript model that torch can load ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}). Save the network "
            "with torch.jit.script or torch.jit.trace and torch.jit.save.",
            source=str(path),
        ) from err
    return module.eval()  # type: ignore[no-any-return]
