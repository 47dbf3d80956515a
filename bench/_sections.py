"""The ingest benchmarks (STOW-RS, C-STORE, memory while ingesting), the warm-up and idle CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

from _common import MB, Data, Sizes, say, settle, stow_figures
from _data import SeriesFiles
from _dicomweb import (
    client,
    qido_latencies,
    request_bodies,
    retrieve_frames,
    stow_concurrently,
)
from _servers import CpuMeter, RssSampler, Server, Voxelhub


def warm_up(servers: list[Server], data: Data) -> None:
    """An untimed first STOW, QIDO and retrieve, so no figure pays for first-use costs
    (imports, caches, prepared statements)."""
    series = data.series("warmup", slices=10)
    for server in servers:
        stow_concurrently(
            server.stow_url, server.headers, [series.paths], batch=5, time_limit_s=120
        )
        qido_latencies(
            server.dicomweb, server.headers, ["PatientID=BENCH0001"], warmup=0, time_limit_s=60
        )
        retrieve_frames(
            server.dicomweb,
            server.headers,
            series.study_instance_uid,
            series.series_instance_uid,
            slices=10,
            size=data.sizes.size,
            syntax="*",
        )


def idle_cpu(
    servers: list[Server], seconds: float = 5.0, quiet_s: float = 20.0
) -> dict[str, float]:
    """CPU use of each idle server's process tree, in percent of one CPU, measured after
    `quiet_s` without requests: the warm-up's own tail (processes starting, the first
    series' documents) is not idling."""
    time.sleep(quiet_s)
    meters = [CpuMeter(server.root_pids()).__enter__() for server in servers]
    time.sleep(seconds)
    for meter in meters:
        meter.__exit__()
    return {
        s.name: round(100 * m.seconds / seconds, 1) for s, m in zip(servers, meters, strict=True)
    }


# --- 1. STOW-RS ---------------------------------------------------------------------------


def stow(servers: list[Server], data: Data, sizes: Sizes, keep: dict[str, Any]) -> dict[str, Any]:
    """Each server's median round of `sizes.stow_rounds` (new series each round, the order
    of the servers alternating), with every round's rate kept: one round swings by 10-25 %
    on a 2-core machine whose other core runs the clients."""
    out: dict[str, Any] = {}
    for clients in sizes.stow_clients:
        rounds: dict[str, list[dict[str, Any]]] = {server.name: [] for server in servers}
        for round_ in range(sizes.stow_rounds):
            series = [data.series(f"stow{clients}-{round_}-{i}") for i in range(clients)]
            if clients == 1 and round_ == 0:
                keep["retrieve_series"] = series[0]
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                bodies = request_bodies([s.paths for s in series], sizes.batch)
                settle()
                with CpuMeter(server.root_pids()) as cpu:
                    outcome, seconds = stow_concurrently(
                        server.stow_url,
                        server.headers,
                        [s.paths for s in series],
                        batch=sizes.batch,
                        time_limit_s=sizes.stow_time_limit_s,
                        bodies=bodies,
                    )
                del bodies
                rounds[server.name].append(stow_figures(outcome, seconds, cpu))
                shares = ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(cpu.by_kind.items()) if v >= 0.05
                )
                say(
                    f"STOW {clients} client(s) {server.name}, round {round_ + 1}: "
                    f"{outcome.stored}/{outcome.sent} stored in {seconds:.1f} s, "
                    f"server CPU {cpu.seconds:.1f} s ({shares})",
                    outcome.errors,
                )
        for name, figures in rounds.items():
            ranked = sorted(figures, key=lambda f: f["instances_per_s"])
            median = dict(ranked[len(ranked) // 2])
            median["rounds_instances_per_s"] = [f["instances_per_s"] for f in figures]
            median["rounds_server_cpu_ms_per_instance"] = [
                f["server_cpu_ms_per_instance"] for f in figures
            ]
            out.setdefault(f"{clients}_clients", {})[name] = median
    return out


# --- 2. C-STORE ---------------------------------------------------------------------------


def _storescu(server: Server, series: SeriesFiles) -> list[str]:
    port = server.dimse_port if isinstance(server, Voxelhub) else server.dicom_port
    return [
        "storescu",
        "-aet",
        "VXHBENCH",
        "-aec",
        server.ae_title,
        "+sd",
        "127.0.0.1",
        str(port),
        str(series.paths[0].parent),
    ]


def cstore(servers: list[Server], data: Data, sizes: Sizes) -> dict[str, Any]:
    series = data.series("cstore", slices=sizes.cstore_slices)
    warmup = data.series("cstore-warmup", slices=5)
    out: dict[str, Any] = {}
    env = {**os.environ, "TCP_NODELAY": "1"}
    for server in servers:
        if isinstance(server, Voxelhub) and not server.dimse_enabled:
            out[server.name] = {"error": "`voxelhub serve` has no --dimse-port option yet"}
            continue
        command = _storescu(server, series)
        # Untimed, as the other sections' warm-up: no figure pays for first-use costs.
        subprocess.run(_storescu(server, warmup), env=env, capture_output=True, timeout=120,
                       check=False)  # fmt: skip
        settle()
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=sizes.stow_time_limit_s,
                check=False,
            )
            seconds = time.perf_counter() - started
        except subprocess.TimeoutExpired:
            out[server.name] = {"error": f"storescu ran past {sizes.stow_time_limit_s} s"}
            continue
        # A server may acknowledge an instance (durable) before it is searchable: the
        # figure counts until every instance is found, for both servers alike.
        stored, visible = _wait_until_found(server, series, started, limit_s=60)
        figures = {
            "instances_per_s": stored / visible,
            "seconds": visible,
            "acknowledged_per_s": len(series.paths) / seconds,
            "storescu_seconds": seconds,
            "sent": len(series.paths),
            "stored": stored,
            "storescu_rc": done.returncode,
        }
        if done.returncode != 0 or stored != len(series.paths):
            figures["error"] = (done.stderr or done.stdout)[-600:]
        out[server.name] = figures
        say(
            f"C-STORE {server.name}: {stored}/{len(series.paths)} found after {visible:.2f} s, "
            f"acknowledged in {seconds:.2f} s (storescu rc {done.returncode})"
        )
    return out


def _wait_until_found(
    server: Server, series: SeriesFiles, started: float, *, limit_s: float
) -> tuple[int, float]:
    """(instances found, seconds from `started` to the query that found them all).

    The time is taken when that query is sent, so the server's QIDO speed is left out.
    """
    deadline = time.perf_counter() + limit_s
    while True:
        asked = time.perf_counter()
        stored = _count_instances(server, series)
        if stored >= len(series.paths) or asked > deadline:
            return stored, asked - started
        time.sleep(0.02)


def _count_instances(server: Server, series: SeriesFiles) -> int:
    url = (
        f"{server.dicomweb}/studies/{series.study_instance_uid}/series/"
        f"{series.series_instance_uid}/instances"
    )
    with client({**server.headers, "Accept": "application/dicom+json"}) as http:
        response = http.get(url)
    if response.status_code != 200 or not response.content:
        return 0
    return len(response.json())


# --- 5. Memory while ingesting ------------------------------------------------------------


def memory(servers: list[Server], data: Data, sizes: Sizes) -> dict[str, Any]:
    series = [data.series(f"memory-{i}") for i in range(sizes.memory_series)]
    gigabytes = sum(s.total_bytes for s in series) / 1024**3
    out: dict[str, Any] = {"gb": gigabytes, "clients": sizes.memory_clients}
    groups = [
        [p for s in series[i :: sizes.memory_clients] for p in s.paths]
        for i in range(sizes.memory_clients)
    ]
    for server in servers:
        settle()
        with RssSampler(server.root_pids()) as sampler, CpuMeter(server.root_pids()) as cpu:
            outcome, seconds = stow_concurrently(
                server.stow_url,
                server.headers,
                groups,
                batch=sizes.batch,
                time_limit_s=sizes.stow_time_limit_s * 2,
            )
        out[server.name] = {
            "peak_rss_mb": sampler.peak / MB,
            "baseline_rss_mb": sampler.baseline / MB,
            "peak_pss_mb": sampler.peak_pss / MB,
            "samples": sampler.samples,
            "mean_sample_interval_ms": 1000 * seconds / max(sampler.samples, 1),
            "processes": sampler.processes,
            **stow_figures(outcome, seconds, cpu),
        }
        say(
            f"memory {server.name}: peak {sampler.peak / MB:.0f} MB (before "
            f"{sampler.baseline / MB:.0f} MB) over {outcome.bytes_sent / MB:.0f} MB "
            f"sent in {seconds:.1f} s",
            outcome.errors,
        )
    for s in series:
        shutil.rmtree(s.paths[0].parent, ignore_errors=True)
    return out
