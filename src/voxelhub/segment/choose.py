"""Choosing a runtime per model by measurement: fastest of those that agree with eager.

Each candidate runtime runs the same representative batch of patches; its labels must
match eager PyTorch's with a Dice of at least `min_dice` on every label present (voxel
agreement when no label is present). The decision is cached beside the model, keyed by the
weights, the patch shape, the device, the thread count and the library versions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime
import torch

from voxelhub.segment.errors import SegmentError
from voxelhub.segment.runtimes import NetworkSource, PatchShape, Predictor, build_predictor

logger = logging.getLogger(__name__)

MIN_DICE = 0.99
Discretizer = Callable[[torch.Tensor], npt.NDArray[np.uint8]]


@dataclass(frozen=True)
class RuntimeTrial:
    """One runtime on the representative batch: seconds per batch and agreement."""

    runtime: str
    seconds: float | None
    dice: float | None
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.dice is not None and self.dice >= MIN_DICE


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str
    trials: tuple[RuntimeTrial, ...]
    cached: bool = False


def label_agreement(reference: npt.NDArray[np.uint8], other: npt.NDArray[np.uint8]) -> float:
    """The lowest Dice over labels present in either map; voxel agreement when none is.

    >>> a = np.array([0, 1, 1, 1], dtype=np.uint8)
    >>> round(label_agreement(a, np.array([0, 1, 1, 0], dtype=np.uint8)), 3)
    0.8
    """
    present = sorted(set(np.unique(reference)) | set(np.unique(other)) - {0})
    present = [int(v) for v in present if v != 0]
    if not present:
        return float(np.mean(reference == other))
    scores = []
    for value in present:
        a, b = reference == value, other == value
        scores.append(2.0 * float(np.sum(a & b)) / float(np.sum(a) + np.sum(b)))
    return min(scores)


def _timed(predict: Predictor, batch: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    output = predict(batch)  # warm-up (compilation, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = predict(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), output


def choose_runtime(
    source: NetworkSource,
    patch: PatchShape,
    *,
    discretize: Discretizer,
    example: torch.Tensor | None = None,
    candidates: Sequence[str] | None = None,
    device: str = "cpu",
    repeats: int = 2,
) -> RuntimeChoice:
    """The fastest candidate runtime whose labels agree with eager's (Dice ≥ 0.99)."""
    names = [r for r in (candidates or source.runtimes) if r in source.runtimes]
    key = _cache_key(source, patch, device, names)
    cache = source.cache_dir / f"runtime-{key}.json"
    cached = _read_cache(cache)
    if cached is not None:
        return cached
    batch = example if example is not None else patch.example()
    reference_name = "eager" if source.module is not None else names[0]
    reference_time, reference = _timed(
        build_predictor(source, reference_name, patch, device=device), batch, repeats
    )
    reference_labels = discretize(reference)
    trials = [RuntimeTrial(reference_name, reference_time, 1.0)]
    for name in names:
        if name == reference_name:
            continue
        try:
            seconds, output = _timed(
                build_predictor(source, name, patch, device=device), batch, repeats
            )
            trial = RuntimeTrial(
                name, seconds, label_agreement(reference_labels, discretize(output))
            )
        except Exception as err:  # a runtime that fails is skipped, not fatal
            logger.warning("runtime %s failed on this model", name, exc_info=True)
            trial = RuntimeTrial(name, None, None, error=f"{type(err).__name__}: {err}")
        trials.append(trial)
    usable = [t for t in trials if t.usable and t.seconds is not None]
    if not usable:
        raise SegmentError("no runtime could run this model; see the log for each error.")
    best = min(usable, key=lambda t: t.seconds or 0.0)
    choice = RuntimeChoice(best.runtime, tuple(trials))
    cache.write_text(
        json.dumps({"runtime": best.runtime, "trials": [asdict(t) for t in trials]}, indent=2)
    )
    logger.info("chose runtime %s: %s", best.runtime, trials)
    return choice


def _cache_key(source: NetworkSource, patch: PatchShape, device: str, names: list[str]) -> str:
    parts = [
        source.digest,
        patch.tag,
        f"b{patch.batch}",
        device,
        f"t{torch.get_num_threads()}",
        torch.__version__,
        onnxruntime.__version__,
        *names,
    ]
    import hashlib

    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _read_cache(path: object) -> RuntimeChoice | None:
    from pathlib import Path

    if not isinstance(path, Path) or not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        trials = tuple(RuntimeTrial(**t) for t in document["trials"])
        return RuntimeChoice(str(document["runtime"]), trials, cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("ignoring unreadable runtime cache %s", path, exc_info=True)
        return None
