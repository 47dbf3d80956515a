"""Segmentation on a GPU: the spleen bundle's 3D U-Net over a CT-sized volume, per runtime.

    python bench/segment_gpu.py                  # on a machine with a CUDA GPU
    python bench/segment_gpu.py --small --device cpu   # a smoke run of the script itself

The network of `segment.py` (the MONAI spleen bundle's U-Net, channels 16-256, 2 residual
units, batch norm; random weights, seeded) runs a sliding window of 96³ patches with overlap
0.5 over a 512 x 512 x 200 volume (a smooth random field in [0, 1], the range of the
bundle's windowed CT), through `voxelhub.segment.inference.sliding_window` and the predictors
of `voxelhub.segment.runtimes` (eager, frozen TorchScript, torch.compile), with `--batches`
patches per call. Two placements: `host` cuts and blends the patches in host memory and
sends each batch to the GPU and its outputs back (the CPU placement, with a GPU network);
`gpu` puts the volume on the GPU once and does everything there. Each row: seconds for the
volume from host array to label map in host memory (softmax and argmax included), after a
warm-up volume, and the label agreement with eager on the host placement.

Prints a table and writes bench/results/segment-gpu-<date>.json (or `--json`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _device import unavailable  # noqa: E402
from tests.segment.bundles import spleen_network  # noqa: E402

from voxelhub.segment.inference import WindowSettings, channel_argmax, sliding_window  # noqa: E402
from voxelhub.segment.runtimes import NetworkSource, PatchShape, build_predictor  # noqa: E402

CHANNELS = [16, 32, 64, 128, 256]
ROI = (96, 96, 96)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--runtimes", default="eager,torchscript,compile")
    parser.add_argument("--batches", default="4,16", help="patches per network call")
    parser.add_argument("--placements", default="host,gpu")
    parser.add_argument("--small", action="store_true", help="160 x 160 x 96: a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    return parser.parse_args(argv)


def volume(shape: tuple[int, int, int], seed: int = 7) -> np.ndarray:
    """A smooth random field in [0, 1], (1, X, Y, Z) float32."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, *(max(s // 16, 2) for s in shape), generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")[0]
    noise = 0.05 * torch.randn(1, *shape, generator=generator)
    return (field + noise).clamp(0, 1).numpy().astype(np.float32)


def labels(
    image: np.ndarray, predictor: Any, settings: WindowSettings, *, device: str
) -> tuple[np.ndarray, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    logits = sliding_window(image, predictor, settings, device=device)
    result = channel_argmax(torch.softmax(logits.float(), dim=0)).cpu().numpy()
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    if unavailable(device):
        return 2
    shape = (160, 160, 96) if args.small else (512, 512, 200)
    image = volume(shape)
    torch.manual_seed(0)
    network = spleen_network(CHANNELS).eval()
    results: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "arguments": {k: v for k, v in vars(args).items() if k != "json"},
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
        "volume_xyz": list(shape),
        "rows": [],
    }
    if device.startswith("cuda"):
        results["environment"]["gpu"] = torch.cuda.get_device_name(0)
    path = args.json or HERE / "results" / f"segment-gpu-{datetime.now():%Y-%m-%dT%H%M}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    reference: np.ndarray | None = None
    header = f"{'runtime':12} {'batch':>5} {'placement':>9} {'s/volume':>9} {'warm-up s':>9}"
    print(f"{header} {'agree':>7}")
    with tempfile.TemporaryDirectory(prefix="voxelhub-bench-seg-gpu-") as folder:
        source = NetworkSource(network, None, "bench", Path(folder))
        for runtime in args.runtimes.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                settings = WindowSettings(roi=ROI, overlap=0.5, sw_batch_size=batch)
                started = time.perf_counter()
                try:
                    predictor = build_predictor(
                        source, runtime, PatchShape(1, ROI, batch), device=device
                    )
                except Exception as err:  # a runtime that cannot run is a row
                    print(f"{runtime:12} {batch:>5} failed: {err!r}")
                    results["rows"].append({"runtime": runtime, "batch": batch, "error": repr(err)})
                    continue
                for placement in args.placements.split(","):
                    where = device if placement == "gpu" else "cpu"
                    first = time.perf_counter()
                    labels(image, predictor, settings, device=where)  # warm-up
                    warm_up = time.perf_counter() - first + (first - started)
                    started = time.perf_counter()
                    found, seconds = labels(image, predictor, settings, device=where)
                    if reference is None:
                        reference = found
                    agreement = float(np.mean(found == reference))
                    row = {
                        "runtime": runtime, "batch": batch, "placement": placement,
                        "seconds": seconds, "warm_up_seconds": warm_up,
                        "agreement_with_first_row": agreement,
                        "foreground_fraction": float(np.mean(found == 1)),
                    }  # fmt: skip
                    results["rows"].append(row)
                    print(
                        f"{runtime:12} {batch:>5} {placement:>9} {seconds:9.2f} {warm_up:9.1f}"
                        f" {agreement:7.4f}",
                        flush=True,
                    )
                    path.write_text(json.dumps(results, indent=1) + "\n")
    if device.startswith("cuda"):
        results["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
