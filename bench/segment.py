"""Segmentation inference throughput: a 3D U-Net (the MONAI spleen bundle) on a CT volume.

The peer is eager PyTorch running the bundle as its config says (sliding window 96³,
overlap 0.5, 4 patches per call, MONAI's transforms as configured); each optimized runtime
runs the same bundle on the same volume in the same process, with voxelhub's fast pipeline
(float32 resampling, the two-class softmax → invert → argmax fused): TorchScript (frozen),
ONNX Runtime, int8 (ONNX Runtime dynamic quantization), torch.compile (frozen,
channels-last). Two more eager rows split the gains: eager with the fast pipeline (what
the pipeline alone gives) and eager with one patch per call (what batching gives).
Figures: seconds per volume, of which in the network, volumes per hour, the ratio to
eager, and agreement with eager's label map (Dice over the foreground, voxel agreement).

The U-Net has the zoo's architecture (channels 16-256, 2 residual units, batch norm) with
random weights (no weights can be downloaded); its output bias is calibrated so that about
half of the body is foreground, which makes the label maps full of boundaries, the hardest
case for agreement. The CT is synthetic: 512x512x200 at 0.8x0.8x2 mm (`--quick`: 256x256x80).

Prints a table and writes bench/results/segment-<date>[-quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.segment.bundles import (  # noqa: E402
    SPLEEN_METADATA,
    spleen_inference,
    spleen_network,
    write_bundle,
)

from voxelhub.segment import load_model  # noqa: E402
from voxelhub.segment.choose import label_agreement  # noqa: E402
from voxelhub.segment.synthetic import ct_case  # noqa: E402

CHANNELS = [16, 32, 64, 128, 256]
# (row name, runtime, patches per call (None: the config's), pipeline (None: the default))
RUNS: list[tuple[str, str, int | None, Literal["config", "fast"] | None]] = [
    ("eager", "eager", None, "config"),
    ("onnxruntime", "onnx", None, None),
    ("int8 (onnxruntime)", "int8", None, None),
    ("torchscript", "torchscript", None, None),
    ("torch.compile", "compile", None, None),
    ("eager, fast pipeline", "eager", None, "fast"),
    ("eager, 1 patch per call", "eager", 1, "config"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller volume (minutes)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip", nargs="*", default=[], help="runtimes to leave out")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    return parser.parse_args(argv)


def calibrated_bundle(root: Path, image: SimpleITK.Image) -> Path:
    """The spleen bundle with a random U-Net whose output bias splits the body in two."""
    torch.manual_seed(0)
    network = spleen_network(CHANNELS).eval()
    write_bundle(root, SPLEEN_METADATA, spleen_inference(channels=CHANNELS, roi=96), network)
    model = load_model(root, runtime="eager")
    array = SimpleITK.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    centre = [s // 2 for s in array.shape]
    crop = array[tuple(slice(max(c - 48, 0), max(c - 48, 0) + 96) for c in centre)]
    windowed = np.clip((crop + 57) / 221, 0, 1)[None, None]
    with torch.no_grad():
        logits = model.engine.source.module(torch.from_numpy(windowed))  # type: ignore[attr-defined]
    margin = float(torch.median(logits[0, 1] - logits[0, 0]))
    last = [
        m for m in network.modules() if isinstance(m, torch.nn.ConvTranspose3d | torch.nn.Conv3d)
    ]
    with torch.no_grad():
        bias = last[-1].bias
        assert bias is not None
        bias[1] -= margin
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def run_one(
    bundle: Path,
    image: SimpleITK.Image,
    runtime: str,
    batch: int | None,
    pipeline: Literal["config", "fast"] | None,
) -> dict[str, Any]:
    """Load, warm up on one batch of patches (exports, compilation), then time one volume."""
    start = time.perf_counter()
    model = load_model(bundle, runtime=runtime, sw_batch_size=batch, pipeline=pipeline)
    engine = model.engine  # type: ignore[attr-defined]
    example = engine.patch.example()
    predictor = engine.predictor(example[0])
    predictor(example)
    warmup = time.perf_counter() - start
    network = [0.0]

    def timed(patches: torch.Tensor) -> torch.Tensor:
        begin = time.perf_counter()
        output = predictor(patches)
        network[0] += time.perf_counter() - begin
        return output

    engine._predictor = timed  # the built predictor, timed: network vs the rest
    start = time.perf_counter()
    labels = model.predict([image])
    seconds = time.perf_counter() - start
    return {
        "warmup_s": warmup,
        "seconds": seconds,
        "network_s": network[0],
        "pipeline": model.pipeline,  # type: ignore[attr-defined]
        "load_average": os.getloadavg()[0],
        "labels": SimpleITK.GetArrayFromImage(labels),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shape, spacing = (
        ((80, 256, 256), (1.6, 1.6, 2.5)) if args.quick else ((200, 512, 512), (0.8, 0.8, 2.0))
    )
    case = ct_case(shape=shape, spacing=spacing, seed=7)
    image = case.to_image(case.image)
    results: dict[str, Any] = {
        "benchmark": "segment",
        "date": datetime.now().isoformat(timespec="seconds"),
        "arguments": {k: v for k, v in vars(args).items() if k != "json"},
        "environment": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_before": os.getloadavg(),
        },
        "volume": {"shape_zyx": list(shape), "spacing_xyz_mm": list(spacing)},
        "rows": [],
    }
    path = (
        args.json
        or HERE
        / "results"
        / f"segment-{datetime.now():%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    )
    with tempfile.TemporaryDirectory(prefix="voxelhub-bench-seg-") as folder:
        bundle = calibrated_bundle(Path(folder) / "spleen_ct_segmentation", image)
        reference: np.ndarray | None = None
        eager_s = None
        print(
            f"{'runtime':28} {'s/volume':>9} {'network':>8} {'warm-up s':>9} {'vol/h':>7} "
            f"{'x eager':>8} {'Dice':>7} {'agree':>7} {'load':>5}"
        )
        for name, runtime, batch, pipeline in RUNS:
            if runtime in args.skip or name in args.skip:
                continue
            try:
                row = run_one(bundle, image, runtime, batch, pipeline)
            except Exception as err:  # a runtime that cannot run is reported, not fatal
                results["rows"].append({"name": name, "runtime": runtime, "error": repr(err)})
                print(f"{name:28} failed: {err!r}")
                continue
            labels = row.pop("labels")
            if reference is None:
                reference, eager_s = labels, row["seconds"]
            fg = float(np.mean(reference == 1))
            entry = {
                "name": name,
                "runtime": runtime,
                "sw_batch_size": batch or 4,
                **row,
                "volumes_per_hour": 3600 / row["seconds"],
                "speedup_vs_eager": (eager_s or row["seconds"]) / row["seconds"],
                "dice_vs_eager": label_agreement(reference, labels),
                "voxel_agreement": float(np.mean(reference == labels)),
                "eager_foreground_fraction": fg,
            }
            results["rows"].append(entry)
            print(
                f"{name:28} {entry['seconds']:9.1f} {entry['network_s']:8.1f} "
                f"{entry['warmup_s']:9.1f} {entry['volumes_per_hour']:7.1f} "
                f"{entry['speedup_vs_eager']:8.2f} {entry['dice_vs_eager']:7.4f} "
                f"{entry['voxel_agreement']:7.4f} {entry['load_average']:5.1f}"
            )
            results["environment"]["load_average_after"] = os.getloadavg()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
