import time
from sqlalchemy import func, select, text, update
from voxelhub.core.db import session_scope, utcnow
from voxelhub.jobs import engine
from voxelhub.jobs.models import Job
from tests.jobs.test_autoscale import make_job  # noqa: F401


def old(db, job_id):
    job = db.get(Job, job_id)
    db.execute(text("SELECT max_concurrent_jobs FROM algorithms WHERE id = :id"), {"id": job.algorithm_id}).scalar()
    db.scalar(select(func.count()).where(Job.state == "running", Job.created_by == job.created_by))
    db.scalar(select(func.count()).where(Job.state == "running", Job.algorithm_id == job.algorithm_id))
    db.execute(update(Job).where(Job.id == job_id, Job.state.in_(("pending", "queued")), Job.cancel_requested.is_(False))
        .values(state="running", attempts=Job.attempts + 1, started_at=utcnow(), worker="w").returning(Job.id)).scalar_one_or_none()
    return db.get(Job, job_id, populate_existing=True)


def new(db, job_id):
    return engine.claim(db, job_id, "w", max_jobs_per_user=10**6)


def test_profile_claim(database_url, make_job):
    with session_scope(database_url) as db:
        db.execute(text("UPDATE algorithms SET max_concurrent_jobs = 1000000"))
    for name, fn in (("old", old), ("new", new), ("old", old), ("new", new)):
        ids = [make_job(queue="cpu", state="queued") for _ in range(120)]
        for i in ids[:20]:
            with session_scope(database_url) as db:
                fn(db, i)
        t = time.process_time(); w = time.perf_counter()
        for i in ids[20:]:
            with session_scope(database_url) as db:
                j = fn(db, i)
                assert j is not None and j.state == "running" and j.worker == "w" and j.inputs is not None
        print(name, "CPU ms/claim", round((time.process_time()-t)/100*1000, 2), "wall", round((time.perf_counter()-w)/100*1000, 2))
