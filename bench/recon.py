"""Reconstruction quality and time per slice: zero-filled, our GRAPPA, pygrappa's cgrappa (the
peer), and RAKI / residual RAKI when they are registered, on simulated fastMRI-sized data.

    .venv/bin/python bench/recon.py --quick      # 320 x 160, 1 slice per R
    .venv/bin/python bench/recon.py              # 640 x 320, 15 coils, 3 slices per R

Without the learned methods a run takes minutes; RAKI trains per slice, so with it allow an
hour on 2 CPU cores (`--methods zero-filled,grappa,cgrappa` leaves it out).

For R = 2, 3, 4, 5, 6 one seeded phantom acquisition (15 coils, 24 ACS lines, correlated
noise) is reconstructed by every method; NMSE / PSNR / SSIM (fastMRI's definitions) against
the RSS of the fully sampled noisy data, and wall-clock seconds per slice (training included
for the learned methods). Prints a table and writes bench/results/recon-<date>[-quick].json.
See bench/README.md.
"""

from __future__ import annotations

import os
import sys

if "--blas-threads" in sys.argv:  # must be set before numpy loads OpenBLAS
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--blas-threads") + 1]

import argparse
import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from voxelhub.recon.compression import compress
from voxelhub.recon.image import kspace_to_images
from voxelhub.recon.methods import accepted_settings, available_methods, reconstruct
from voxelhub.recon.metrics import evaluate
from voxelhub.recon.model import KSpace
from voxelhub.recon.phantom import PhantomAcquisition, PhantomSpec, simulate

HERE = Path(__file__).resolve().parent
PEER = "pygrappa cgrappa"
Runner = Callable[[KSpace], np.ndarray]


@dataclass(frozen=True)
class Row:
    acceleration: int
    method: str
    nmse: float
    psnr: float
    ssim: float
    seconds_per_slice: float
    error: str = ""
    # 1-minute load average when the row was measured: wall times on a shared machine
    # mean little without it.
    load_average: float = float("nan")
    # CPU seconds of this process per slice (all its threads): steadier than wall time
    # where other processes share the cores.
    cpu_seconds_per_slice: float = float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="320 x 160, one slice per R")
    parser.add_argument("--rates", default="2,3,4,5,6", help="accelerations, comma-separated")
    parser.add_argument("--slices", type=int, default=None, help="slices per R [3; quick: 1]")
    parser.add_argument("--acs", type=int, default=24, help="ACS lines [24]")
    parser.add_argument("--snr", type=float, default=40.0, help="phantom SNR [40]")
    parser.add_argument("--seed", type=int, default=1, help="phantom seed [1; defaults tuned on 0]")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per method; the fastest counts"
    )
    parser.add_argument("--methods", default=None, help="subset, e.g. grappa,cgrappa,raki")
    parser.add_argument("--blas-threads", default=None, help="OPENBLAS_NUM_THREADS for this run")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads of RAKI/rRAKI [one per core]"
    )
    parser.add_argument(
        "--coil-compression",
        type=int,
        default=None,
        help="also run grappa and raki on the data SVD-compressed to this many virtual coils",
    )
    parser.add_argument(
        "--full-length",
        action="store_true",
        help="also run raki and rraki trained as the paper did (raki.FULL_LENGTH; minutes a slice)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    parser.add_argument(
        "--pipeline",
        default=None,
        help="instead: time drop folder -> DICOM in the store with these methods, e.g. grappa",
    )
    parser.add_argument(
        "--pipeline-slices", type=int, default=20, help="slices of the dropped file [20]"
    )
    return parser.parse_args(argv)


def spec_for(args: argparse.Namespace, acceleration: int) -> PhantomSpec:
    slices = args.slices or (1 if args.quick else 3)
    if args.quick:
        return PhantomSpec(
            readout=320,
            phase_encode=160,
            coils=15,
            slices=slices,
            acceleration=acceleration,
            acs_lines=args.acs,
            snr=args.snr,
            anatomy="knee",
            readout_oversampling=2,
        )
    return PhantomSpec.fastmri(
        phase_encode=320, acceleration=acceleration, slices=slices, acs_lines=args.acs, snr=args.snr
    )


def cgrappa_runner() -> Runner | None:
    """The peer: pygrappa's cgrappa with its defaults (5 x 5 kernel, lamda 0.01), slice by
    slice, on the same ACS block; None when pygrappa is not installed."""
    try:
        from pygrappa import cgrappa  # type: ignore[import-untyped]
    except ImportError:
        return None

    def run(kspace: KSpace) -> np.ndarray:
        start, stop = kspace.sampling.acs
        filled = np.empty_like(kspace.data)
        for index, data in enumerate(kspace.data):
            coils_last = np.ascontiguousarray(np.moveaxis(data, 0, -1), dtype=np.complex128)
            calib = np.ascontiguousarray(coils_last[:, start:stop])
            result = cgrappa(coils_last, calib, kernel_size=(5, 5), lamda=0.01, coil_axis=-1)
            filled[index] = np.moveaxis(result, -1, 0)
        return kspace_to_images(filled, kspace.header)

    return run


def registered_runner(
    name: str,
    seed: int,
    *,
    threads: int | None = None,
    virtual_coils: int | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Runner:
    """A registered method with its defaults (a seed and CPU threads where it takes them)
    changed by `overrides`; with `virtual_coils` the k-space is SVD-compressed first (timed
    with the method)."""
    accepted = accepted_settings(name)
    settings: dict[str, Any] = {"seed": seed} if "seed" in accepted else {}
    if threads is not None and "threads" in accepted:
        settings["threads"] = threads
    settings.update(overrides or {})

    def run(kspace: KSpace) -> np.ndarray:
        if virtual_coils is not None:
            kspace, _ = compress(kspace, virtual_coils=virtual_coils)
        return reconstruct(kspace, name, **settings).images

    return run


def runners(args: argparse.Namespace) -> dict[str, Runner]:
    found: dict[str, Runner] = {
        name: registered_runner(name, args.seed, threads=args.threads)
        for name in available_methods()
    }
    if args.coil_compression:
        for name in ("grappa", "raki"):
            found[f"{name} cc{args.coil_compression}"] = registered_runner(
                name, args.seed, threads=args.threads, virtual_coils=args.coil_compression
            )
    if args.full_length:
        from voxelhub.recon.raki import FULL_LENGTH

        for name in ("raki", "rraki"):
            if name in found:
                found[f"{name} full"] = registered_runner(
                    name, args.seed, threads=args.threads, overrides=FULL_LENGTH
                )
    peer = cgrappa_runner()
    if peer is not None:
        found = {
            "zero-filled": found.pop("zero-filled"),
            "grappa": found.pop("grappa"),
            PEER: peer,
            **found,
        }
    if args.methods:
        wanted = {m.strip() for m in args.methods.split(",")}
        found = {
            k: v
            for k, v in found.items()
            if k in wanted or k.split()[-1] in wanted or k.split()[0] in wanted
        }
    return found


def measure(acq: PhantomAcquisition, name: str, run: Runner, *, repeats: int) -> Row:
    rate, seconds, cpu = acq.kspace.sampling.acceleration, float("inf"), float("inf")
    try:
        for _ in range(max(repeats, 1)):
            started, cpu_started = time.perf_counter(), time.process_time()
            images = run(acq.kspace)
            seconds = min(seconds, (time.perf_counter() - started) / acq.kspace.slices)
            cpu = min(cpu, (time.process_time() - cpu_started) / acq.kspace.slices)
    except Exception as err:  # a failing method is a row, not the end of the benchmark
        error = f"{type(err).__name__}: {err}"
        return Row(rate, name, np.nan, np.nan, np.nan, np.nan, error, os.getloadavg()[0])
    metrics = evaluate(acq.reference, images)
    load = os.getloadavg()[0]
    return Row(rate, name, metrics.nmse, metrics.psnr, metrics.ssim, seconds, "", load, cpu)


def print_table(rows: list[Row]) -> None:
    print(
        f"\n{'R':>2}  {'method':<18} {'NMSE':>8} {'PSNR dB':>8} {'SSIM':>7} {'s/slice':>8}"
        f" {'cpu s':>7} {'load':>5}"
    )
    for row in rows:
        if row.error:
            print(f"{row.acceleration:>2}  {row.method:<18} failed: {row.error[:80]}")
            continue
        print(
            f"{row.acceleration:>2}  {row.method:<18} {row.nmse:8.4f} {row.psnr:8.2f} "
            f"{row.ssim:7.4f} {row.seconds_per_slice:8.2f} {row.cpu_seconds_per_slice:7.2f}"
            f" {row.load_average:5.1f}"
        )
    ratios = []
    for rate in sorted({r.acceleration for r in rows}):
        ours = [r for r in rows if r.acceleration == rate and r.method == "grappa"]
        peer = [r for r in rows if r.acceleration == rate and r.method == PEER]
        if ours and peer and not (ours[0].error or peer[0].error):
            ratios.append(f"R={rate}: {peer[0].seconds_per_slice / ours[0].seconds_per_slice:.1f}x")
    if ratios:
        print("GRAPPA speed-up over cgrappa (time per slice): " + ", ".join(ratios))


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in ("numpy", "scipy", "h5py", "pygrappa", "torch"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pipeline:
        from _recon_pipeline import run_pipeline

        return run_pipeline(args, HERE)
    methods = runners(args)
    print(f"methods: {', '.join(methods)}", flush=True)
    results: dict[str, Any] = {
        "environment": environment(),
        "arguments": {k: v for k, v in vars(args).items() if k != "json"},
        "specs": {},
        "rows": [],
    }
    rows: list[Row] = []
    path = args.json or HERE / "results" / (
        f"recon-{datetime.now():%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    for rate in (int(r) for r in args.rates.split(",")):
        spec = spec_for(args, rate)
        acq = simulate(spec, seed=args.seed)
        results["specs"][rate] = asdict(spec)
        for name, run in methods.items():
            row = measure(acq, name, run, repeats=args.repeats)
            rows.append(row)
            print(
                f"  R={rate} {name}: NMSE {row.nmse:.4f}, SSIM {row.ssim:.4f}, "
                f"{row.seconds_per_slice:.2f} s/slice ({row.cpu_seconds_per_slice:.2f} CPU s),"
                f" load {row.load_average:.1f} {row.error}",
                flush=True,
            )
            # Written after every row, so a long run that is stopped keeps what it measured.
            results["rows"] = [asdict(row) for row in rows]
            results["environment"]["load_average_after"] = os.getloadavg()
            path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print_table(rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
