"""Multi-model endpoints: one endpoint serves many models, loaded on first use.

A model is a file (TorchScript `.pt` or ONNX `.onnx`) uploaded to an endpoint, or a MONAI
bundle algorithm named by its slug (`algorithms.endpoint_bundles`); it lives in the object
store under `endpoints/{endpoint}/{model}`, so adding one needs no restart.
Loaded models stay warm in a `ModelCache` and the least recently used are evicted under
the memory budget.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from voxelhub.algorithms.modelcache import ModelCache
from voxelhub.core.errors import BadRequest, NotFound
from voxelhub.core.objects import ObjectNotFound, ObjectStore

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
MAX_ELEMENTS = 64 * 1024 * 1024
_cache: ModelCache | None = None


def cache(budget_mb: float = 2048) -> ModelCache:
    """The process's loaded models; `budget_mb` applies when the first call creates it."""
    global _cache  # noqa: PLW0603 - one warm cache per process
    if _cache is None:
        _cache = ModelCache(budget_mb, dispose=release)
    return _cache


def release(model: Any) -> None:
    """Free what a model evicted from the cache holds (a bundle's process is closed)."""
    close = getattr(model, "close", None)
    if callable(close):
        close()


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise BadRequest(f"{name!r} is not a valid {kind} name: use a-z, 0-9, '.', '_', '-'")
    return name


def model_key(endpoint: str, model: str, runtime: str) -> str:
    return f"endpoints/{check_name('endpoint', endpoint)}/{check_name('model', model)}.{runtime}"


@dataclass(frozen=True)
class Loaded:
    run: Callable[[dict[str, npt.NDArray[Any]]], dict[str, npt.NDArray[Any]]]


def _load_torchscript(data: bytes) -> tuple[Loaded, float]:
    import torch

    module = torch.jit.load(io.BytesIO(data), map_location="cpu")  # type: ignore[no-untyped-call]
    module.eval()
    size = sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20

    def run(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        with torch.inference_mode():
            result = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()])
        outputs = result if isinstance(result, tuple | list) else [result]
        return {f"output{i}": o.detach().cpu().numpy() for i, o in enumerate(outputs)}

    return Loaded(run), max(size, len(data) / 2**20)


def _load_onnx(data: bytes) -> tuple[Loaded, float]:
    try:
        import onnxruntime
    except ImportError as err:
        raise BadRequest("ONNX models need the onnxruntime package on the server") from err
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        feed = dict(zip(names, inputs.values(), strict=False))
        outs = session.run(None, feed)
        return {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), outs, strict=True)}

    return Loaded(run), len(data) / 2**20


RUNTIMES: dict[str, Callable[[bytes], tuple[Loaded, float]]] = {
    "pt": _load_torchscript,
    "onnx": _load_onnx,
}


def runtime_of(filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower()
    if suffix not in RUNTIMES:
        raise BadRequest(
            f"a model file must be TorchScript (.pt) or ONNX (.onnx), not {filename!r}; "
            "for a MONAI bundle, upload it as an algorithm and send algorithm=<slug> instead"
        )
    return suffix


# A model that is an uploaded MONAI bundle algorithm (`algorithms.endpoint_bundles`).
REFERENCE = "algorithm"
SUFFIXES = (*RUNTIMES, REFERENCE)


def find_model(store: ObjectStore, endpoint: str, model: str) -> str:
    for runtime in SUFFIXES:
        key = model_key(endpoint, model, runtime)
        if store.exists(key):
            return key
    raise NotFound(f"endpoint {endpoint!r} has no model {model!r}; upload it first")


def decode_array(name: str, spec: Any) -> npt.NDArray[Any]:
    """An input tensor: {"shape", "dtype", "data" (base64)} or {"values": nested lists}."""
    if not isinstance(spec, dict):
        raise BadRequest(f"input {name!r} must be an object with 'values' or 'data'")
    try:
        dtype = np.dtype(spec.get("dtype", "float32"))
        if "values" in spec:
            array = np.asarray(spec["values"], dtype=dtype)
        else:
            raw = base64.b64decode(spec["data"], validate=True)
            array = np.frombuffer(raw, dtype=dtype).reshape(spec["shape"])
    except (KeyError, ValueError, TypeError) as err:
        raise BadRequest(f"input {name!r} is not a valid tensor: {err}") from err
    if array.size > MAX_ELEMENTS:
        raise BadRequest(f"input {name!r} has more than {MAX_ELEMENTS} elements")
    return array


def encode_array(array: npt.NDArray[Any]) -> dict[str, Any]:
    contiguous = np.ascontiguousarray(array)
    return {
        "shape": list(contiguous.shape),
        "dtype": str(contiguous.dtype),
        "data": base64.b64encode(contiguous.tobytes()).decode(),
    }


def invoke(store: ObjectStore, endpoint: str, model: str, inputs: dict[str, Any]) -> dict[str, Any]:
    key = find_model(store, endpoint, model)
    runtime = key.rsplit(".", 1)[-1]

    def load() -> tuple[Loaded, float]:
        try:
            data = store.get(key)
        except ObjectNotFound as err:
            raise NotFound(f"model {model!r} was removed") from err
        try:
            return RUNTIMES[runtime](data)
        except BadRequest:
            raise
        except Exception as err:
            raise BadRequest(
                f"model {model!r} cannot be loaded as {runtime}: {err}; upload a valid file"
            ) from err

    loaded: Loaded = cache().get(key, load)
    arrays = {name: decode_array(name, spec) for name, spec in inputs.items()}
    try:
        outputs = loaded.run(arrays)
    except Exception as err:
        raise BadRequest(f"model {model!r} could not run on these inputs: {err}") from err
    return {name: encode_array(value) for name, value in outputs.items()}
