"""`load_model`: a bundle folder, or a TorchScript/ONNX file with its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from voxelhub.segment.bundle import BundleModel, is_bundle
from voxelhub.segment.card_model import CardModel
from voxelhub.segment.errors import SegmentError
from voxelhub.segment.model import SegmentationModel
from voxelhub.segment.runtimes import RUNTIMES, set_threads


def load_model(
    path: Path | str,
    *,
    card: Path | str | None = None,
    runtime: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    sw_batch_size: int | None = None,
    pipeline: Literal["config", "fast"] | None = None,
) -> SegmentationModel:
    """The model at `path`: a MONAI bundle folder, or a network file with `card`.

    `runtime` is one of eager, torchscript, onnx, compile, int8 or auto (measured on the
    first case, decision cached beside the model); `device` is "cpu" (default) or "cuda";
    `threads` caps the CPU threads of torch and onnxruntime; `sw_batch_size` overrides the
    number of sliding-window patches per network call that the config or card sets;
    `pipeline` is how a bundle's pre- and postprocessing run: "config" exactly as
    configured, "fast" in float32 with fused steps (default: "config" for eager, else "fast").
    """
    path = Path(path)
    if runtime != "auto" and runtime not in RUNTIMES:
        raise SegmentError(
            f"runtime {runtime!r} is unknown; choose one of {', '.join(RUNTIMES)} or auto."
        )
    device = device or "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SegmentError(
                "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu."
            )
    elif device != "cpu":
        raise SegmentError(f"device {device!r} is unknown; use cpu or cuda.")
    set_threads(threads)
    if not path.exists():
        raise SegmentError("does not exist.", source=str(path))
    if path.is_dir():
        if not is_bundle(path):
            raise SegmentError(
                "is a folder but not a MONAI bundle (no configs/metadata.json).", source=str(path)
            )
        if card is not None:
            raise SegmentError("a bundle carries its own configs; give no model card with it.")
        return BundleModel(
            path, runtime=runtime, device=device, sw_batch_size=sw_batch_size, pipeline=pipeline
        )
    if card is None:
        raise SegmentError(
            "a plain network file needs a model card (--card card.json) that "
            "says its inputs, labels, window and preprocessing.",
            source=str(path),
        )
    return CardModel(path, Path(card), runtime=runtime, device=device, sw_batch_size=sw_batch_size)
