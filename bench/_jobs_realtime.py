"""Benchmark 3: the real-time endpoint against the same built-in called directly.

`POST /api/v1/algorithms/echo/invoke` with a tiny payload, sequentially from one keep-alive
client, after untimed warm-up calls. The model's own time is `RUNNERS["echo"]` called here
on a prepared working directory (only the call is timed); the overhead is the difference.
Two more references split the overhead: an authenticated `GET /api/v1/algorithms/echo`
(HTTP, authentication, one session: the floor of any API call) and the handler's own
`Server-Timing` header.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _jobs_server import Platform, RoleCpu, database_counters
from _jobs_stats import percentile, spread

from voxelhub.algorithms.builtins import RUNNERS
from voxelhub.algorithms.contract import INPUTS_JSON, InputEntry, InputsManifest, prepare_workdir
from voxelhub.archives.values import ValueKind

PAYLOAD = {"x": [1, 2, 3]}


def _server_ms(header: str | None) -> float | None:
    if not header or "dur=" not in header:
        return None
    return float(header.split("dur=", 1)[1].split(",", 1)[0].split(";", 1)[0])


def direct(calls: int) -> dict[str, Any]:
    """RUNNERS["echo"] on a prepared tmp workdir: the call alone, and with the workdir."""
    fn = RUNNERS["echo"]
    call_s, whole_s = [], []
    for _ in range(calls):
        started = time.perf_counter()
        workdir = Path(tempfile.mkdtemp(prefix="vxh-bench-rt-"))
        try:
            prepare_workdir(workdir)
            manifest = InputsManifest(
                job_id="bench",
                algorithm="echo",
                inputs=[InputEntry(interface="payload", kind=ValueKind.json, value=PAYLOAD)],
            )
            (workdir / "input" / INPUTS_JSON).write_text(manifest.model_dump_json())
            called = time.perf_counter()
            fn(workdir / "input", workdir / "output", workdir / "model")
            call_s.append(time.perf_counter() - called)
            (workdir / "output" / "payload.json").read_text()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        whole_s.append(time.perf_counter() - started)
    return {"call": spread(call_s), "with_workdir": spread(whole_s)}


def run(platform: Platform, *, calls: int, warmup: int = 20) -> dict[str, Any]:
    latency_s, server_ms, floor_s = [], [], []
    failures = 0
    with httpx.Client(base_url=platform.base, headers=platform.headers, timeout=60) as client:
        for _ in range(warmup):
            client.post("/api/v1/algorithms/echo/invoke", json={"inputs": {"payload": PAYLOAD}})
            client.get("/api/v1/algorithms/echo")
        time.sleep(1.2)  # PostgreSQL's counters lag by up to a second
        counters = database_counters(platform.database_url)
        with RoleCpu(platform.roles()) as cpu:
            for _ in range(calls):
                started = time.perf_counter()
                answer = client.post(
                    "/api/v1/algorithms/echo/invoke", json={"inputs": {"payload": PAYLOAD}}
                )
                latency_s.append(time.perf_counter() - started)
                if answer.status_code != 200 or answer.json()["outputs"]["payload"] != PAYLOAD:
                    failures += 1
                timing = _server_ms(answer.headers.get("server-timing"))
                if timing is not None:
                    server_ms.append(timing)
        time.sleep(1.2)
        after = database_counters(platform.database_url)
        for _ in range(calls):
            started = time.perf_counter()
            client.get("/api/v1/algorithms/echo").raise_for_status()
            floor_s.append(time.perf_counter() - started)
    model = direct(calls)
    http = spread(latency_s)
    own = model["call"]["p50_ms"] or 0.0
    return {
        "calls": calls,
        "failures": failures,
        "invoke_http": http,
        "invoke_handler_server_timing": {
            "n": len(server_ms),
            "p50_ms": percentile(server_ms, 50),
            "p95_ms": percentile(server_ms, 95),
        },
        # Less sensitive to a busy machine than the latencies: CPU and commits per call.
        "cpu_ms_per_call": {
            role: 1000 * seconds / calls
            for role, seconds in cpu.seconds.items()
            if role in ("api", "postgres")
        },
        "commits_per_call": (after["xact_commit"] - counters["xact_commit"]) / calls,
        "others_cpu_seconds": cpu.others,
        "floor_get_algorithm_http": spread(floor_s),
        "model_direct": model,
        "overhead_p50_ms": (http["p50_ms"] or 0.0) - own,
        "overhead_p95_ms": (http["p95_ms"] or 0.0) - own,
    }
