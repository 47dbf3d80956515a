"""RAKI and residual RAKI on a GPU: seconds per slice, training included, and the quality
against the same methods on the CPU, GRAPPA and the paper's full-length training.

    python bench/recon_gpu.py                    # on a machine with a CUDA GPU
    python bench/recon_gpu.py --small --device cpu   # a smoke run of the script itself

One seeded fastMRI-sized phantom (15 coils, 640 x 320, 24 ACS lines, SNR 40, `--slices`
slices) is undersampled at each R; every variant reconstructs all slices and is timed from
the k-space in host memory to the images in host memory (what a reconstruction job does).
Variants: the defaults (bfloat16 products, as many slices per batch as fit, at most 32),
float32, 8 slices per batch (`batch8`), and the paper's training (`raki.FULL_LENGTH`). The
first CUDA call of the process (context, cuBLAS handles) is timed apart as start-up. With
`--cpu-check` the first slice is also reconstructed on the CPU in float32, for the quality
of the GPU's bfloat16 against it.
Last, the anchor's dataset: `--dataset-slices` slices (the simulated ones repeated; about
2.4 GB of complex64 k-space at 98 slices) at R = 4, timed whole with the defaults and the
paper's training (`--dataset-variants`).

Prints a table and writes bench/results/recon-gpu-<date>.json (or `--json`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _device import unavailable

from voxelhub.recon.grappa import grappa
from voxelhub.recon.masks import equispaced_mask
from voxelhub.recon.metrics import evaluate
from voxelhub.recon.model import KSpace
from voxelhub.recon.phantom import PhantomSpec, simulate
from voxelhub.recon.raki import FULL_LENGTH, reconstruct_raki
from voxelhub.recon.rraki import reconstruct_rraki

HERE = Path(__file__).resolve().parent
METHODS = {"raki": reconstruct_raki, "rraki": reconstruct_rraki}


@dataclass(frozen=True)
class Row:
    acceleration: int
    method: str
    variant: str
    device: str
    slices: int
    seconds: float
    nmse: float
    psnr: float
    ssim: float

    @property
    def per_slice(self) -> float:
        return self.seconds / self.slices


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--rates", default="2,3,4,5,6", help="accelerations, comma-separated")
    parser.add_argument("--slices", type=int, default=16, help="simulated slices [16]")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed [1]")
    parser.add_argument("--snr", type=float, default=40.0, help="phantom SNR [40]")
    parser.add_argument(
        "--variants", default="default,float32,batch8,full", help="which variants to run"
    )
    parser.add_argument("--cpu-check", action="store_true", help="slice 1 on the CPU as well")
    parser.add_argument(
        "--dataset-slices",
        type=int,
        default=98,
        help="slices of the anchor's dataset [98; 0: skip]",
    )
    parser.add_argument(
        "--dataset-variants", default="default,full", help="variants run on the dataset"
    )
    parser.add_argument("--small", action="store_true", help="320 x 160 and 2 slices: a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    return parser.parse_args(argv)


def phantom(args: argparse.Namespace) -> tuple[KSpace, np.ndarray]:
    """The fully sampled noisy k-space as a KSpace at R = 1 and its RSS reference."""
    if args.small:
        spec = PhantomSpec(
            readout=320, phase_encode=160, coils=15, slices=2, acs_lines=24, snr=args.snr,
            anatomy="knee", readout_oversampling=2,
        )  # fmt: skip
    else:
        spec = PhantomSpec.fastmri(phase_encode=320, slices=args.slices, snr=args.snr)
    acq = simulate(spec, seed=args.seed)
    full = KSpace(
        data=acq.fully_sampled, sampling=acq.kspace.sampling, header=acq.kspace.header,
        source="phantom",
    )  # fmt: skip
    return full, acq.reference


def undersampled(full: KSpace, acceleration: int, *, acs_lines: int = 24) -> KSpace:
    sampling = equispaced_mask(full.data.shape[-1], acceleration, acs_lines=acs_lines)
    return KSpace(
        data=full.data * sampling.mask, sampling=sampling, header=full.header, source="phantom"
    )


def variant_settings(variant: str, device: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"device": device, "seed": 0}
    if variant == "float32":
        settings["precision"] = "float32"
    elif variant.startswith("batch"):
        settings["slices_per_batch"] = int(variant.removeprefix("batch"))
    elif variant == "full":
        settings.update(FULL_LENGTH)
    elif variant != "default":
        raise SystemExit(f"unknown variant {variant!r}")
    return settings


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(
    run: Any, kspace: KSpace, device: str, settings: dict[str, Any] | None = None
) -> tuple[np.ndarray, float]:
    synchronize(device)
    started = time.perf_counter()
    images = run(kspace, **(settings or {})).images
    synchronize(device)
    return images, time.perf_counter() - started


class Recorder:
    """Times runs, scores them against the reference and writes the figures after each."""

    def __init__(self, path: Path, results: dict[str, Any]) -> None:
        self.path, self.results, self.rows = path, results, list[Row]()

    def measure(
        self, run: Any, kspace: KSpace, reference: np.ndarray, *, method: str, variant: str,
        device: str, settings: dict[str, Any] | None = None,
    ) -> Row:  # fmt: skip
        images, seconds = timed(run, kspace, device, settings)
        metrics = evaluate(reference[: len(images)], images)
        new = Row(
            kspace.sampling.acceleration, method, variant, device, len(images), seconds,
            metrics.nmse, metrics.psnr, metrics.ssim,
        )  # fmt: skip
        self.rows.append(new)
        print(
            f"  R={new.acceleration} {new.method} {new.variant} on {new.device}: "
            f"{new.per_slice:.3f} s/slice over {new.slices}, NMSE {new.nmse:.5f}, "
            f"SSIM {new.ssim:.4f}",
            flush=True,
        )
        self.write()
        return new

    def write(self) -> None:
        self.results["rows"] = [asdict(r) | {"seconds_per_slice": r.per_slice} for r in self.rows]
        self.path.write_text(json.dumps(self.results, indent=1, default=str) + "\n")


def environment(device: str) -> dict[str, Any]:
    found: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        found.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            multiprocessors=properties.multi_processor_count,
            cuda=torch.version.cuda,
        )
    return found


def print_table(rows: list[Row]) -> None:
    print(
        f"\n{'R':>2}  {'method':<6} {'variant':<8} {'device':<6} {'slices':>6} {'s/slice':>8}"
        f" {'NMSE':>8} {'PSNR':>7} {'SSIM':>7}"
    )
    for r in rows:
        print(
            f"{r.acceleration:>2}  {r.method:<6} {r.variant:<8} {r.device:<6} {r.slices:>6}"
            f" {r.per_slice:8.3f} {r.nmse:8.5f} {r.psnr:7.2f} {r.ssim:7.4f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    if unavailable(device):
        return 2
    path = args.json or HERE / "results" / f"recon-gpu-{datetime.now():%Y-%m-%dT%H%M}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"environment": environment(device), "arguments": vars(args)}
    print(json.dumps(results["environment"]), flush=True)
    started = time.perf_counter()
    full, reference = phantom(args)
    results["simulation_seconds"] = time.perf_counter() - started
    print(f"simulated {full.data.shape} in {results['simulation_seconds']:.1f} s", flush=True)

    # Start-up: the process's first call pays for the CUDA context and library handles.
    tiny = undersampled(KSpace(full.data[:1, :, :64], full.sampling, full.header, "phantom"), 4)
    warm_up = {"device": device, "iterations": 5}
    _, first = timed(reconstruct_raki, tiny, device, warm_up)
    _, second = timed(reconstruct_raki, tiny, device, warm_up)
    results["start_up_seconds"] = {"first_call": first, "second_call": second}
    print(f"start-up: first call {first:.2f} s, second {second:.2f} s", flush=True)

    recorder = Recorder(path, results)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for rate in (int(r) for r in args.rates.split(",")):
        measure_rate(recorder, undersampled(full, rate), reference, args, variants)
    if args.dataset_slices:
        measure_dataset(recorder, full, reference, args)
    if device.startswith("cuda"):
        results["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    recorder.write()
    print_table(recorder.rows)
    print(f"wrote {path}")
    return 0


def measure_rate(
    recorder: Recorder, kspace: KSpace, reference: np.ndarray, args: argparse.Namespace,
    variants: list[str],
) -> None:  # fmt: skip
    device = args.device
    recorder.measure(grappa, kspace, reference, method="grappa", variant="default", device="cpu")
    for method, function in METHODS.items():
        for variant in variants:
            settings = variant_settings(variant, device)
            recorder.measure(
                function, kspace, reference, method=method, variant=variant, device=device,
                settings=settings,
            )  # fmt: skip
        if args.cpu_check:
            one = KSpace(kspace.data[:1], kspace.sampling, kspace.header, "phantom")
            on_cpu = {"device": "cpu", "seed": 0, "precision": "float32"}
            recorder.measure(
                function, one, reference, method=method, variant="float32", device="cpu",
                settings=on_cpu,
            )  # fmt: skip
            recorder.measure(
                function, one, reference, method=method, variant="1 slice", device=device,
                settings=variant_settings("default", device),
            )  # fmt: skip


def measure_dataset(
    recorder: Recorder, full: KSpace, reference: np.ndarray, args: argparse.Namespace
) -> None:
    slices, device = args.dataset_slices, args.device
    repeats = -(-slices // full.data.shape[0])
    data = np.concatenate([full.data] * repeats)[:slices]
    big = undersampled(KSpace(data, full.sampling, full.header, "phantom"), 4)
    references = np.concatenate([reference] * repeats)[:slices]
    gigabytes = big.data.nbytes / 1e9
    recorder.results["dataset_gigabytes"] = gigabytes
    print(f"dataset: {big.data.shape}, {gigabytes:.2f} GB of complex64", flush=True)
    for variant in args.dataset_variants.split(","):
        for method, function in METHODS.items():
            row = recorder.measure(
                function, big, references, method=method, variant=f"{variant} {slices}",
                device=device, settings=variant_settings(variant, device),
            )  # fmt: skip
            print(f"  whole dataset by {method} ({variant}): {row.seconds:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
