"""The state of each part of a running platform, for `GET /healthz`."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from voxelhub.core import migrate
from voxelhub.core.db import ping, session_scope, utcnow
from voxelhub.core.runtime import Runtime
from voxelhub.jobs import supervisor
from voxelhub.jobs.models import WorkerHeartbeat

# A worker beats every few seconds; silence for this long means it is gone.
WORKER_STALE_AFTER = timedelta(seconds=30)


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check() or {}
        state: dict[str, Any] = {"ok": True, **detail}
    except Exception as err:  # a health probe reports every failure, it never raises
        state = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    state["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return state


def report(runtime: Runtime) -> dict[str, Any]:
    """A JSON-ready report; `status` is ok, degraded (no live worker) or down."""
    url = runtime.database_url

    def database() -> dict[str, Any]:
        ping(url)
        head = migrate.head()
        at = migrate.current(url)
        if at != head:
            raise RuntimeError(f"schema at {at}, expected {head}: run `voxelhub migrate`")
        return {"embedded": runtime.embedded_pg is not None, "schema": at}

    def objects() -> dict[str, Any]:
        runtime.store.check()
        return {"backend": type(runtime.store).__name__}

    def workers() -> dict[str, Any]:
        with session_scope(url) as db:
            beats = list(db.scalars(select(WorkerHeartbeat)))
        live = [b for b in beats if utcnow() - b.seen_at < WORKER_STALE_AFTER]
        supervised = supervisor.read_state(runtime.settings.home)
        given_up = [w for w in (supervised or {}).get("workers", []) if w.get("given_up")]
        if given_up:
            raise RuntimeError(
                f"{len(given_up)} worker(s) of serve kept failing and are no longer restarted "
                f"(last: {given_up[0].get('last_exit')}); see serve's log and restart it"
            )
        if not live:
            raise RuntimeError("no worker has reported in the last 30 s")
        detail: dict[str, Any] = {
            "live": len(live),
            "hosts": sorted(f"{b.hostname}" for b in live),
        }
        if supervised is not None:
            detail["supervised"] = supervised["workers"]
        return detail

    parts = {"database": _timed(database), "objects": _timed(objects), "workers": _timed(workers)}
    if not (parts["database"]["ok"] and parts["objects"]["ok"]):
        status = "down"
    elif not parts["workers"]["ok"]:
        status = "degraded"
    else:
        status = "ok"
    uptime = (utcnow() - runtime.started_at).total_seconds()
    return {"status": status, "uptime_s": round(uptime, 1), "parts": parts}
