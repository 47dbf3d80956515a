"""Throughput of the whole reconstruction pipeline: a fastMRI file dropped into the watched
folder of `voxelhub serve` → ingest (raw tier) → `mri-preprocess` → `mri-recon-<method>` →
the MR series in the image store, timed from the drop to the series being queryable.

    .venv/bin/python bench/recon.py --pipeline grappa --pipeline-slices 20

The platform runs as deployed: `voxelhub serve` with its embedded PostgreSQL and broker and
one worker of its own, `VOXELHUB_DROP_FOLDER` and `VOXELHUB_RECON_ON_ARRIVAL=<method>` (which
adds the two triggers to the default archive: raw `kspace` → preprocessing,
`mri-preprocess.kspace-preprocessed` → reconstruction). Stage times come from the job rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _jobs_server import Platform

from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.model import KSpace
from voxelhub.recon.phantom import PhantomSpec, simulate

TIMEOUT_S = 3600
SIMULATED_SLICES = 2


@dataclass
class DropPlatform(Platform):
    drop: Path = Path()
    method: str = "grappa"

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "VOXELHUB_DROP_FOLDER": str(self.drop),
            "VOXELHUB_RECON_ON_ARRIVAL": self.method,
        }


def _seconds(job: dict[str, Any], start: str, stop: str) -> float | None:
    if not job.get(start) or not job.get(stop):
        return None
    first, last = datetime.fromisoformat(job[start]), datetime.fromisoformat(job[stop])
    return (last - first).total_seconds()


def _wait_for_series(client: httpx.Client, method: str, dropped: float) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        jobs = client.get("/api/v1/jobs").json()
        recon = [j for j in jobs if "images" in (j.get("outputs") or {})]
        failed = [j for j in jobs if j["state"] == "failed"]
        if failed:
            raise RuntimeError(f"a pipeline job failed: {failed[0].get('error')}")
        if recon and recon[0]["state"] == "succeeded":
            uid = recon[0]["outputs"]["images"]["series_instance_uids"][0]
            found = client.get("/dicom-web/series", params={"SeriesInstanceUID": uid}).json()
            if found:
                total = time.monotonic() - dropped
                pre = next(j for j in jobs if j is not recon[0])
                return {
                    "method": method,
                    "drop_to_series_s": round(total, 2),
                    "preprocess_job": {
                        "queued_s": _seconds(pre, "created_at", "started_at"),
                        "run_s": _seconds(pre, "started_at", "finished_at"),
                        "outputs": pre.get("outputs"),
                    },
                    "recon_job": {
                        "queue": recon[0]["queue"],
                        "queued_s": _seconds(recon[0], "created_at", "started_at"),
                        "run_s": _seconds(recon[0], "started_at", "finished_at"),
                    },
                    "trigger_gap_s": _seconds(
                        {"a": pre.get("finished_at"), "b": recon[0].get("created_at")}, "a", "b"
                    ),
                    "series_instance_uid": uid,
                }
        time.sleep(0.5)
    raise RuntimeError(f"no series within {TIMEOUT_S} s")


def _acquisition(spec: PhantomSpec) -> KSpace:
    """`spec.slices` slices: SIMULATED_SLICES simulated ones repeated (simulating all of them
    takes longer than reconstructing them; every slice costs the pipeline the same)."""
    few = simulate(replace(spec, slices=min(SIMULATED_SLICES, spec.slices)), seed=1).kspace
    repeats = -(-spec.slices // few.slices)
    data = np.concatenate([few.data] * repeats)[: spec.slices]
    return replace(few, data=np.ascontiguousarray(data))


def _one_run(method: str, spec: PhantomSpec, work: Path) -> dict[str, Any]:
    drop = work / "drop"
    drop.mkdir(parents=True)
    platform = DropPlatform(home=work / "home", serve_workers=1, drop=drop, method=method)
    platform.start()
    try:
        with httpx.Client(base_url=platform.base, headers=platform.headers, timeout=120) as client:
            staged = work / "staging" / "knee_pipeline.h5"
            staged.parent.mkdir()
            write_fastmri(staged, _acquisition(spec))
            size = staged.stat().st_size
            dropped = time.monotonic()
            os.replace(staged, drop / staged.name)  # appears at once, as a scanner's copy
            figures = _wait_for_series(client, method, dropped)
    finally:
        platform.stop()
    slices = spec.slices
    figures.update(
        {
            "raw_file_bytes": size,
            "slices": slices,
            "seconds_per_slice": round(figures["drop_to_series_s"] / slices, 2),
        }
    )
    recon = figures["recon_job"]
    started = figures["drop_to_series_s"] - (recon["run_s"] or 0) - (recon["queued_s"] or 0)
    figures["before_recon_job_s"] = round(started, 2)
    return figures


def run_pipeline(args: argparse.Namespace, here: Path) -> int:
    spec = PhantomSpec.fastmri(
        phase_encode=320, acceleration=4, slices=args.pipeline_slices, acs_lines=args.acs
    )
    results: dict[str, Any] = {
        "spec": {**spec.__dict__},
        "simulated_slices": SIMULATED_SLICES,
        "load_average": os.getloadavg(),
        "runs": [],
    }
    path = args.json or here / "results" / f"recon-pipeline-{datetime.now():%Y-%m-%d}.json"
    for method in args.pipeline.split(","):
        work = Path(tempfile.mkdtemp(prefix="voxelhub-recon-pipeline-"))
        try:
            figures = _one_run(method.strip(), spec, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(figures, indent=1, default=str), flush=True)
        results["runs"].append(figures)
        results["load_average_after"] = os.getloadavg()
        path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return 0
