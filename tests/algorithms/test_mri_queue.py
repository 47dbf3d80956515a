"""GPU-capable algorithms (the MRI reconstructions) go to `gpu` while a live worker serves it,
else to their fallback queue `cpu`."""

from __future__ import annotations

from datetime import timedelta

from voxelhub.algorithms.builtins import BUILTINS
from voxelhub.algorithms.service import queue_for
from voxelhub.core.db import session_scope, utcnow
from voxelhub.jobs.models import WorkerHeartbeat

GPU_FIRST = {"queue": "gpu", "fallback_queue": "cpu"}


def _beat(database_url: str, name: str, queues: str, *, age_s: float = 0) -> None:
    with session_scope(database_url) as db:
        seen = utcnow() - timedelta(seconds=age_s)
        db.add(WorkerHeartbeat(hostname=name, queues=queues, pid=1, seen_at=seen))


def test_reconstructions_prefer_the_gpu_queue() -> None:
    for slug in ("mri-recon-grappa", "mri-recon-raki", "mri-recon"):
        resources = BUILTINS[slug].resources
        assert (resources.queue, resources.fallback_queue) == ("gpu", "cpu")


def test_no_worker_serving_gpu_means_cpu(database_url: str) -> None:
    _beat(database_url, "cpu-host", "cpu")
    with session_scope(database_url) as db:
        assert queue_for(db, GPU_FIRST) == "cpu"


def test_a_live_gpu_worker_gets_the_job(database_url: str) -> None:
    _beat(database_url, "cpu-host", "cpu")
    _beat(database_url, "gpu-host", "gpu,cpu")
    with session_scope(database_url) as db:
        assert queue_for(db, GPU_FIRST) == "gpu"


def test_a_silent_gpu_worker_does_not_count(database_url: str) -> None:
    _beat(database_url, "gpu-host", "gpu", age_s=3600)
    with session_scope(database_url) as db:
        assert queue_for(db, GPU_FIRST) == "cpu"


def test_without_a_fallback_the_queue_is_kept(database_url: str) -> None:
    with session_scope(database_url) as db:
        assert queue_for(db, {"queue": "gpu"}) == "gpu"
        assert queue_for(db, {}) == "cpu"
