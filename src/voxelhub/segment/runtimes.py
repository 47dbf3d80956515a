"""Ways to run one network on batches of patches: eager PyTorch and optimized runtimes.

Each runtime turns a network into a `Predictor` (a batch of patches in, logits out, torch
tensors on both sides) that the sliding-window inferer calls:

- ``eager``: the module as it is, under `torch.inference_mode` (the reference).
- ``torchscript``: traced and frozen on channels-last tensors (a TorchScript file:
  frozen and optimized for inference).
- ``onnx``: exported to ONNX (dynamic batch axis) and run by onnxruntime.
- ``int8``: the ONNX export with weights quantized to int8 by onnxruntime's
  `quantize_dynamic` (PyTorch's dynamic quantization covers Linear layers only, and
  segmentation networks are convolutions).
- ``compile``: `torch.compile` (inductor) with frozen weights on channels-last
  tensors; the first batch pays the compilation.

ONNX exports are cached in the model's cache folder, keyed by the weights' digest and the
patch shape.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxelhub.segment.errors import SegmentError

logger = logging.getLogger(__name__)

RUNTIMES = ("eager", "torchscript", "onnx", "compile", "int8")
Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PatchShape:
    """The batches a network is fed: channels, ROI (spatial, network layout) and batch size."""

    channels: int
    roi: tuple[int, int, int]
    batch: int

    def example(self, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(self.batch, self.channels, *self.roi, generator=generator)

    @property
    def tag(self) -> str:
        return f"c{self.channels}-{'x'.join(map(str, self.roi))}"


@dataclass(frozen=True, eq=False)
class NetworkSource:
    """A network to run: a torch module, or an ONNX file when there is no module.

    `digest` identifies the weights (for caches); `cache_dir` is where exports and the
    runtime decision are kept (next to the model when that folder is writable).
    """

    module: torch.nn.Module | None
    onnx_path: Path | None
    digest: str
    cache_dir: Path

    @property
    def runtimes(self) -> tuple[str, ...]:
        """The runtimes this source can use (torch.compile cannot take TorchScript)."""
        if self.module is None:
            return ("onnx", "int8")
        if isinstance(self.module, torch.jit.ScriptModule):
            return tuple(r for r in RUNTIMES if r != "compile")
        return RUNTIMES


def file_digest(*paths: Path) -> str:
    """A short SHA-256 of the files' bytes, for cache keys."""
    sha = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:16]


def cache_dir_for(model_dir: Path, digest: str) -> Path:
    """`model_dir/.voxelhub-cache`, or a per-user cache when the model folder is read-only."""
    preferred = model_dir / ".voxelhub-cache"
    try:
        preferred.mkdir(exist_ok=True)
        probe = preferred / ".write-test"
        probe.write_text("")
        probe.unlink()
        return preferred
    except OSError:
        fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        folder = fallback / "voxelhub" / "segment" / digest
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def set_threads(threads: int | None) -> int:
    """Use `threads` CPU threads in torch (all cores by default); returns the count in use."""
    if threads is not None:
        if threads < 1:
            raise SegmentError(f"threads must be at least 1, not {threads}.")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def build_predictor(
    source: NetworkSource, runtime: str, patch: PatchShape, *, device: str = "cpu"
) -> Predictor:
    """A predictor running `source` with `runtime` on `device` ("cpu" or "cuda")."""
    if runtime not in source.runtimes:
        raise SegmentError(
            f"runtime {runtime!r} is not available for this model; choose one of "
            f"{', '.join(source.runtimes)} (or auto)."
        )
    if runtime in ("onnx", "int8"):
        path = export_onnx(source, patch)
        if runtime == "int8":
            path = quantized_onnx(path)
        return _onnx_predictor(path, device=device)
    module = source.module
    assert module is not None  # narrowed by source.runtimes
    module = module.to(device).eval()
    if runtime == "torchscript":
        if device == "cpu" and not isinstance(module, torch.jit.ScriptModule):
            return _channels_last(
                _torch_predictor(_frozen_channels_last(module, patch), device=device)
            )
        module = _frozen_torchscript(module, patch, device=device)
    elif runtime == "compile":
        return _padded(_compiled_predictor(module, device=device), patch.batch)
    return _torch_predictor(module, device=device)


def _torch_predictor(module: torch.nn.Module, *, device: str) -> Predictor:
    def predict(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _first_output(module(batch.to(device))).to(batch.device)

    return predict


def _compiled_predictor(module: torch.nn.Module, *, device: str) -> Predictor:
    """`torch.compile` with frozen weights, on channels-last tensors when they are 5-D.

    Freezing folds batch norm into the convolutions and lets inductor pre-pack their
    weights for oneDNN; channels-last (NDHWC) is the layout oneDNN's 3D convolutions run
    without reordering every activation, about 1.5-2x eager on a 2-core CPU.
    """
    layout = torch.channels_last_3d if device == "cpu" else torch.contiguous_format
    # A copy: the source's module stays as it is for the other runtimes.
    private = copy.deepcopy(module).to(memory_format=layout)  # type: ignore[call-overload]
    compiled: Callable[[torch.Tensor], object] = torch.compile(
        private, dynamic=False, options={"freezing": device == "cpu"}
    )

    def predict(batch: torch.Tensor) -> torch.Tensor:
        inputs = batch.to(device)
        if inputs.ndim == 5:
            inputs = inputs.contiguous(memory_format=layout)
        # Inductor's freezing runs under no_grad; inference_mode tensors would be re-traced.
        with torch.no_grad():
            output = _first_output(compiled(inputs))
        return output.contiguous().to(batch.device)

    return predict


def _padded(predict: Predictor, size: int) -> Predictor:
    """Pads short batches to `size`, so a compiled graph sees one shape only."""

    def run(batch: torch.Tensor) -> torch.Tensor:
        count = batch.shape[0]
        if count >= size:
            return predict(batch)
        filler = batch[-1:].expand(size - count, *batch.shape[1:])
        return predict(torch.cat([batch, filler]))[:count]

    return run


def _first_output(output: object) -> torch.Tensor:
    """The logits of networks that return a tensor, a tuple/list (deep supervision) or dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and output:
        first = next(iter(output.values()))
        if isinstance(first, torch.Tensor):
            return first
    raise SegmentError(f"the network returned {type(output).__name__}, not a tensor of logits.")


def _frozen_torchscript(
    module: torch.nn.Module, patch: PatchShape, *, device: str
) -> torch.nn.Module:
    with torch.inference_mode(False), torch.no_grad():
        scripted = (
            module
            if isinstance(module, torch.jit.ScriptModule)
            else torch.jit.trace(module, patch.example().to(device), check_trace=False)  # type: ignore[no-untyped-call]
        )
        frozen = torch.jit.freeze(scripted.eval())
        return torch.jit.optimize_for_inference(frozen)


def _frozen_channels_last(module: torch.nn.Module, patch: PatchShape) -> torch.nn.Module:
    """A traced, frozen copy of `module` on channels-last tensors (CPU).

    Frozen (batch norm folded, weights constant) but not `optimize_for_inference`d: that
    converts every activation to oneDNN's blocked layout and back, slower than eager
    here; channels-last is the layout oneDNN's 3D convolutions take as they are.
    """
    layout = torch.channels_last_3d
    private = copy.deepcopy(module).to(memory_format=layout)  # type: ignore[call-overload]
    example = patch.example().contiguous(memory_format=layout)
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(private, example, check_trace=False)  # type: ignore[no-untyped-call]
        frozen: torch.nn.Module = torch.jit.freeze(traced.eval())
        return frozen


def _channels_last(predict: Predictor) -> Predictor:
    """Feeds `predict` 5-D batches in channels-last layout; returns contiguous outputs."""

    def run(batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim == 5:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        return predict(batch).contiguous()

    return run


def export_onnx(source: NetworkSource, patch: PatchShape) -> Path:
    """The network as ONNX (batch axis dynamic), exported once and cached."""
    if source.module is None:
        assert source.onnx_path is not None  # a source holds one or the other
        return source.onnx_path
    path = source.cache_dir / f"model-{source.digest}-{patch.tag}.onnx"
    if path.exists():
        return path
    module = source.module.to("cpu").eval()
    partial = path.with_suffix(".partial")
    try:
        # The TorchScript-based exporter is deprecated in favour of one that needs
        # onnxscript, which is not a dependency; it still exports these networks exactly.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (patch.example(),),
                str(partial),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    except Exception as err:
        partial.unlink(missing_ok=True)
        raise SegmentError(f"the network cannot be exported to ONNX: {err}") from err
    partial.replace(path)
    return path


def quantized_onnx(path: Path) -> Path:
    """`path` with int8 weights (onnxruntime dynamic quantization), cached beside it.

    The first and the last convolution stay in float32: they see raw intensities and
    produce the logits, and quantizing them costs the most agreement for the least speed.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(path.stem + "-int8.onnx")
    if target.exists():
        return target
    convolutions = [
        node.name for node in onnx.load(str(path)).graph.node if node.op_type.startswith("Conv")
    ]
    partial = target.with_suffix(".partial")
    quantize_dynamic(
        path,
        partial,
        weight_type=QuantType.QUInt8,
        nodes_to_exclude=[convolutions[0], convolutions[-1]] if convolutions else [],
    )
    partial.replace(target)
    return target


def _onnx_predictor(path: Path, *, device: str) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:
        raise SegmentError(f"onnxruntime cannot load the model: {err}", source=str(path)) from err
    name = session.get_inputs()[0].name

    def predict(batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().to("cpu", torch.float32).numpy()
        (logits, *_) = session.run(None, {name: np.ascontiguousarray(array)})
        return torch.from_numpy(np.asarray(logits)).to(batch.device)

    return predict
