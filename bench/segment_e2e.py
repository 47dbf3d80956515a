"""A CT series arrives → a MONAI bundle segments it in the sandbox → the SEG is in the store.

Runs `voxelhub serve` (embedded PostgreSQL, one worker) in a temporary home, uploads a MONAI
bundle as an algorithm package (trained here on synthetic CTs with `voxelhub.segment.train`
unless `--bundle` names one), makes a trigger on a new archive (CT, ≥ 50 instances), sends a
synthetic 100-slice CT with a spleen (`voxelhub.segment.synthetic.ct_case`) over STOW-RS,
and polls QIDO-RS until the SEG series is visible in the study. The phases:

- STOW: the first request to the last answer;
- trigger pickup: the last STOW answer → the job row (the trigger waits for the series to
  be quiet for `SETTLE` and runs on the workers' periodic tick);
- job start: job created → claimed by a worker;
- job run: claimed → finished, split with the job's own records: the bundle's sandboxed
  process (`resources.duration_s`; inside it, the entry point's timings: reading the
  series, inference, writing SEG/SR/mask) and the rest (materialising the series before,
  collecting and storing SEG/SR/volumes/mask after);
- visible: job finished → the SEG answered by QIDO-RS.

Bundle jobs run on a warm sandboxed process per bundle (`voxelhub.algorithms.warm`), so two
series are sent, each a new study: the first pays for starting that process (Python,
torch, MONAI, the model), the second finds the model loaded. The worker starts that process
as soon as a series its trigger matches begins to arrive (`triggers.evaluate(prewarm=True)`),
so on the first series the start overlaps STOW and the settle time; what is left of it
shows in the sandboxed process's time.

Then the same bundle is added as a model of a multi-model endpoint and called on the first
CT (served by the web process): the first call starts its process and loads the model, the
next ones find it loaded.

The peer, measured in the same run on the same CT (as NIfTI) and bundle: MONAI's own
`monai.bundle.run` (what `python -m monai.bundle run --config_file configs/inference.json`
calls) in a fresh process, as a user of the bundle runs it without the platform, timed from
start to exit. The ratios compare
it with the platform's whole job run (claimed → finished: DICOM in, SEG/SR/volumes/mask
stored), cold and warm.

    nice .venv/bin/python bench/segment_e2e.py [--bundle DIR] [--slices 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import platform as host
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
from _jobs_server import Platform

from voxelhub.segment.synthetic import ct_case, dicom_series
from voxelhub.segment.train import TrainingCase, TrainingSettings, train_segmentation

RESULTS = Path(__file__).with_name("results")
SLUG = "bundle-spleen"
BOUNDARY = "vxhsegbench"
POLL_S = 0.1
# Training grid and the bench CT cover the same body in mm: 64 x 48 x 32 voxels of
# 3 x 3 x 4 mm; the CT has 100 slices of 512 x 384 pixels over the same extent.
TRAIN_SHAPE, TRAIN_SPACING = (32, 48, 64), (3.0, 3.0, 4.0)


def bench_ct(slices: int, *, seed: int) -> Any:
    extent = [n * s for n, s in zip(reversed(TRAIN_SHAPE), TRAIN_SPACING, strict=True)]
    shape = (slices, 384, 512)
    spacing = (extent[0] / shape[2], extent[1] / shape[1], extent[2] / shape[0])
    return ct_case(shape=shape, spacing=spacing, seed=seed)


def train_bundle(target: Path, epochs: int) -> dict[str, Any]:
    cases = []
    for seed in range(10):
        case = ct_case(shape=TRAIN_SHAPE, spacing=TRAIN_SPACING, seed=seed)
        spacing = tuple(reversed(case.geometry.spacing))
        cases.append(TrainingCase(f"case-{seed}", case.image, case.labels, spacing=spacing))  # type: ignore[arg-type]
    settings = TrainingSettings(
        epochs=epochs,
        roi=(32, 32, 16),
        channels=(8, 16, 32),
        samples_per_case=8,
        batch_size=16,
        learning_rate=1e-2,
        intensity_range=(-57.0, 164.0),
        labels=("spleen",),
        modality="CT",
    )
    started = time.monotonic()
    result = train_segmentation(cases, target, settings)
    return {"train_s": time.monotonic() - started, "best_dice": result.best_dice}


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"bundle/{path.relative_to(folder)}")
    return buffer.getvalue()


def stow_bodies(datasets: list[Any], batch: int = 50) -> list[bytes]:
    bodies = []
    for start in range(0, len(datasets), batch):
        parts = []
        for ds in datasets[start : start + batch]:
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            parts.append(head + buffer.getvalue() + b"\r\n")
        bodies.append(b"".join(parts) + f"--{BOUNDARY}--\r\n".encode())
    return bodies


def setup(client: httpx.Client, bundle: Path) -> str:
    client.post("/api/v1/algorithms", json={"slug": SLUG, "title": "Spleen"}).raise_for_status()
    spec = {
        "kind": "package",
        "inputs": [{"interface": "ct", "kind": "dicom_series"}],
        "outputs": [
            {"interface": "segmentation", "kind": "dicom_series"},
            {"interface": "report", "kind": "dicom_series"},
            {"interface": "volumes", "kind": "json"},
            {"interface": "mask", "kind": "image"},
        ],
        "resources": {"memory_mb": 8192, "time_limit_s": 600, "cpus": 2},
    }
    client.post(
        f"/api/v1/algorithms/{SLUG}/versions",
        data={"spec": json.dumps(spec)},
        files={"file": ("bundle.zip", zipped(bundle))},
    ).raise_for_status()
    archive = client.post("/api/v1/archives", json={"name": f"Seg-{uuid.uuid4().hex[:8]}"})
    archive.raise_for_status()
    archive_id = str(archive.json()["id"])
    client.post(
        f"/api/v1/archives/{archive_id}/triggers",
        json={"algorithm": SLUG, "input_interface": "ct", "modality": "CT", "min_instances": 50},
    ).raise_for_status()
    return archive_id


def wait_for_seg(client: httpx.Client, archive_id: str, study_uid: str, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = client.get(
            f"/dicom-web/archives/{archive_id}/studies/{study_uid}/series",
            params={"Modality": "SEG"},
        )
        if found.status_code == 200 and found.content and found.json():
            return time.time()
        jobs = client.get("/api/v1/jobs", params={"limit": 5}).json()
        if jobs and jobs[0]["state"] in ("failed", "cancelled"):
            raise RuntimeError(f"the job failed: {jobs[0]['message']}")
        time.sleep(POLL_S)
    raise TimeoutError(f"no SEG in {timeout_s:g} s")


def job_figures(platform: Platform, archive_id: str, series_uid: str) -> dict[str, Any]:
    from sqlalchemy import select

    from voxelhub.algorithms.models import TriggerRun
    from voxelhub.core.db import session_scope
    from voxelhub.jobs.models import Job
    from voxelhub.store.models import Series

    with session_scope(platform.database_url) as db:
        series = db.scalar(
            select(Series).where(
                Series.archive_id == uuid.UUID(archive_id),
                Series.series_instance_uid == series_uid,
            )
        )
        fired = db.scalar(
            select(TriggerRun).where(TriggerRun.series_id == (series.id if series else None))
        )
        job = db.get(Job, fired.job_id) if fired is not None and fired.job_id else None
        if series is None or job is None or job.started_at is None or job.finished_at is None:
            raise RuntimeError("the series or the finished job is missing")
        timings: dict[str, float] = {}
        for line in (job.log or "").splitlines():
            if line.startswith('{"timings"'):
                timings = json.loads(line)["timings"]
        return {
            "last_write": series.updated_at.timestamp(),
            "created": job.created_at.timestamp(),
            "started": job.started_at.timestamp(),
            "finished": job.finished_at.timestamp(),
            "sandbox_s": float(job.resources.get("duration_s") or 0.0),
            "max_rss_mb": job.resources.get("max_rss_mb"),
            "entry_timings": timings,
            "state": job.state,
            "case_id": str(job.case_id),
        }


def peer_monai_bundle_run(bundle: Path, case: Any, work: Path) -> dict[str, Any]:
    """`python -m monai.bundle run` on the same CT as NIfTI, in a fresh process."""
    import SimpleITK as sitk  # noqa: N813 - the library's own spelling

    data, out = work / "peer-data", work / "peer-out"
    data.mkdir()
    sitk.WriteImage(case.images()["ct"], str(data / "ct.nii.gz"))
    # `python -m monai.bundle run` is the same function behind the `fire` package (not
    # installed here); calling it directly runs the same code.
    script = (
        "import sys; from monai.bundle import run; "
        "run(bundle_root=sys.argv[1], config_file=sys.argv[2], meta_file=sys.argv[3], "
        "dataset_dir=sys.argv[4], output_dir=sys.argv[5])"
    )
    command = [
        sys.executable, "-c", script, str(bundle),
        str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "metadata.json"),
        str(data), str(out),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        return {"error": done.stderr[-2000:], "wall_s": elapsed}
    return {"wall_s": elapsed, "outputs": sorted(p.name for p in out.rglob("*.nii*"))}


def one_series(
    platform: Platform, client: httpx.Client, archive_id: str, *, seed: int, args: Any
) -> tuple[dict[str, Any], Any, str]:
    """Send one new CT study and measure until its SEG is visible; figures, CT, its UID."""
    case = bench_ct(args.slices, seed=seed)
    ct = dicom_series(case.image, case.geometry, series_description="Bench abdomen CT")
    bodies = stow_bodies(ct)
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    begin = time.time()
    for body in bodies:
        client.post(
            f"/dicom-web/archives/{archive_id}/studies", content=body, headers=headers
        ).raise_for_status()
    stowed = time.time()
    visible = wait_for_seg(client, archive_id, ct[0].StudyInstanceUID, args.timeout)
    job = job_figures(platform, archive_id, ct[0].SeriesInstanceUID)
    entry = job["entry_timings"]
    run_s = job["finished"] - job["started"]
    figures = {
        "total_s (first STOW request → SEG visible over QIDO)": visible - begin,
        "phases_s": {
            f"STOW-RS ({len(ct)} instances)": stowed - begin,
            "trigger pickup (last STOW answer → job created)": job["created"] - stowed,
            "job start (created → claimed by a worker)": job["started"] - job["created"],
            "job: materialise inputs + collect/store outputs": run_s - job["sandbox_s"],
            "job: sandboxed bundle process (incl. start + model load when cold)": job["sandbox_s"],
            "  in it: read DICOM series": entry.get("read_s"),
            "  in it: inference": entry.get("inference_s"),
            "  in it: write SEG + SR + mask + volumes": entry.get("write_s"),
            "visible (job finished → SEG answered by QIDO)": visible - job["finished"],
        },
        "job_s": run_s,
        "sandbox_s": job["sandbox_s"],
    }
    return figures, case, ct[0].SeriesInstanceUID


def endpoint_calls(
    client: httpx.Client, archive_id: str, series_uid: str, calls: int = 3
) -> dict[str, Any]:
    """The bundle as a model of a multi-model endpoint: first call (load), then warm calls."""
    client.put(
        "/api/v1/endpoints/organs/models/spleen", data={"algorithm": SLUG}
    ).raise_for_status()
    given = {"ct": {"archive_id": archive_id, "series_instance_uid": series_uid}}
    figures: dict[str, Any] = {}
    warm: list[float] = []
    for call in range(calls):
        started = time.monotonic()
        answer = client.post(
            "/api/v1/endpoints/organs/invoke", json={"model": "spleen", "inputs": given}
        )
        answer.raise_for_status()
        elapsed = time.monotonic() - started
        if call == 0:
            figures["first call (bundle process starts, model loads) s"] = elapsed
            figures["first call was cold"] = answer.json()["cold"]
        else:
            warm.append(elapsed)
    figures["warm call s (median)"] = float(np.median(warm))
    models = client.get("/api/v1/endpoints/organs/models").json()
    figures["memory_mb of the loaded bundle"] = models[0]["memory_mb"]
    return figures


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bundle = Path(args.bundle) if args.bundle else work / "bundle"
    training = {} if args.bundle else train_bundle(bundle, args.epochs)
    platform = Platform(home=work / "home", serve_workers=1)
    platform.start()
    runs: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=platform.base, headers=platform.headers, timeout=600) as client:
            archive_id = setup(client, bundle)
            # The first series starts the warm bundle process; the second finds it loaded.
            runs["first series (cold: bundle process starts)"], case, uid = one_series(
                platform, client, archive_id, seed=9001, args=args
            )
            runs["second series (warm: model already loaded)"], _, _ = one_series(
                platform, client, archive_id, seed=9002, args=args
            )
            endpoint = endpoint_calls(client, archive_id, uid)
    finally:
        platform.stop()
    figures: dict[str, Any] = dict(runs)
    figures["multi-model endpoint, the same bundle on the first CT (web process)"] = endpoint
    peer = peer_monai_bundle_run(bundle, case, work)
    figures["peer: monai.bundle run (fresh process, same CT as NIfTI)"] = peer
    if "wall_s" in peer and not peer.get("error"):
        for name, figure in runs.items():
            figures[f"ratio job run / monai.bundle run, {name}"] = figure["job_s"] / peer["wall_s"]
    return {"training": training, "figures": figures, "voxels": list(case.image.shape)}


def show(figures: dict[str, Any], indent: int = 0) -> None:
    for name, value in figures.items():
        if isinstance(value, dict):
            print(" " * indent + name)
            show(value, indent + 2)
        elif isinstance(value, float):
            print(f"{' ' * indent}{name:<{76 - indent}} {value:8.2f}")
        else:
            print(f"{' ' * indent}{name:<{76 - indent}} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="A bundle folder to use instead of training one")
    parser.add_argument("--epochs", type=int, default=15, help="Training epochs (no --bundle)")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vxh-segbench-") as scratch:
        result = run(args, Path(scratch))
    result["machine"] = {
        "cpus": __import__("os").cpu_count(),
        "load_1min_after": __import__("os").getloadavg()[0],
        "python": host.python_version(),
        "numpy": np.__version__,
    }
    show(result["figures"])
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"segment-e2e-{dt.date.today().isoformat()}.json"
    target.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written to {target}")


if __name__ == "__main__":
    main()
