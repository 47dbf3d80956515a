"""The final table of the job benchmarks, each figure next to its goal, and the JSON file."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

CONFIGS = {
    "serve-w2": "serve --workers 2",
    "worker-c4": "worker --concurrency 4",
}
HOW = {
    "http": "HTTP, {clients} clients",
    "http-batch": "HTTP batches of 100, {clients} clients",
    "inprocess": "start_job in-process, one message a job, {clients} threads",
    "inprocess-batch": "start_jobs in-process, 100 a transaction, grouped messages, "
    "{clients} threads",
}


def _get(node: Any, *path: str) -> Any:
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _row(
    benchmark: str,
    config: str,
    value: Any,
    unit: str,
    goal: float | None = None,
    *,
    at_least: bool = True,
) -> dict[str, Any]:
    ratio = value / goal if isinstance(value, int | float) and goal else None
    meets = None
    if ratio is not None:
        meets = ratio >= 1 if at_least else ratio <= 1
    return {
        "benchmark": benchmark,
        "config": config,
        "value": value,
        "unit": unit,
        "goal": None if goal is None else f"{'>=' if at_least else '<'} {goal:g}",
        "ratio_to_goal": ratio,
        "meets": meets,
    }


def dispatch_rows(figures: dict[str, Any], goals: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for key, f in figures.items():
        if not key.startswith("dispatch/"):
            continue
        _, transport, config, how = key.split("/")
        where = f"{transport}, {CONFIGS.get(config, config)}, " + HOW[how].format(
            clients=f["clients"]
        )
        goal = goals[f"{transport}_jobs_per_s"]
        done = f["states"].get("succeeded", 0)
        cpu = sum(f["cpu_ms_per_job"].values())
        rows += [
            _row("1 throughput (first created → last finished)", where,
                 f["throughput_per_s"], "jobs/s", goal),
            _row("  jobs succeeded / created", where, f"{done}/{f['jobs']}", ""),
            _row("  creation rate", where, f["creation_per_s"], "jobs/s"),
            _row("  execution rate (first started → last finished)", where,
                 f["execution_per_s"], "jobs/s"),
            _row("  dispatch latency p50 (started - created)", where,
                 f["dispatch"]["p50_ms"], "ms"),
            _row("  dispatch latency p95", where, f["dispatch"]["p95_ms"], "ms"),
            _row("  dispatch latency p99", where, f["dispatch"].get("p99_ms"), "ms"),
            _row("  end-to-end p50 (finished - created)", where,
                 f["end_to_end"]["p50_ms"], "ms"),
            _row("  end-to-end p95", where, f["end_to_end"]["p95_ms"], "ms"),
            _row("  run on worker p50 (finished - started)", where, f["run"]["p50_ms"], "ms"),
            _row("  CPU per job, all processes", where, cpu or None, "ms"),
            *(
                _row(f"  CPU per job, {role}", where, ms, "ms")
                for role, ms in f["cpu_ms_per_job"].items()
            ),
            _row("  CPU-bound ceiling (cores x 1000 / CPU per job)", where,
                 (os.cpu_count() or 1) * 1000 / cpu if cpu else None, "jobs/s"),
        ]  # fmt: skip
    return rows


def serial_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, f in figures.items():
        if not key.startswith("serial/"):
            continue
        _, transport, config = key.split("/")
        where = f"{transport}, {CONFIGS.get(config, config)}, one job at a time"
        rows += [
            _row("1 dispatch latency p50, idle workers", where, f["dispatch"]["p50_ms"], "ms"),
            _row("  dispatch latency p95, idle workers", where, f["dispatch"]["p95_ms"], "ms"),
            _row("  end-to-end p50, idle workers", where, f["end_to_end"]["p50_ms"], "ms"),
        ]
    return rows


def other_rows(figures: dict[str, Any], goals: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    trigger = figures.get("trigger")
    if trigger:
        where = f"{trigger['instances']}-slice {trigger['size']}² CT, embedded, serve -w 2"
        rows.append(_row("2 upload → triggered job succeeded", where, trigger["total_s"], "s",
                         goals["trigger_s"], at_least=False))  # fmt: skip
        for part, seconds in trigger["parts_s"].items():
            rows.append(_row(f"  {part}", where, seconds, "s"))
        steps = _get(trigger, "in_process_rerun", "steps") or {}
        for label in ("materialise", "executor run (thread start, algorithm, join)",
                      "record the end: outputs + finish in one transaction, commit"):  # fmt: skip
            mean = _get(steps, label, "mean_ms")
            if mean is not None:
                rows.append(_row(f"  of the run: {label} (rerun here)", where, mean / 1000, "s"))
    realtime = figures.get("realtime")
    if realtime:
        where = "POST /algorithms/echo/invoke, 1 keep-alive client"
        rows += [
            _row("3 real-time overhead p50 (invoke - model)", where,
                 realtime["overhead_p50_ms"], "ms", goals["realtime_overhead_ms"],
                 at_least=False),
            _row("  overhead p95", where, realtime["overhead_p95_ms"], "ms"),
            _row("  invoke latency p50", where, realtime["invoke_http"]["p50_ms"], "ms"),
            _row("  invoke latency p95", where, realtime["invoke_http"]["p95_ms"], "ms"),
            _row("  of it: handler (Server-Timing) p50", where,
                 realtime["invoke_handler_server_timing"]["p50_ms"], "ms"),
            _row("  floor: GET /algorithms/echo p50", where,
                 realtime["floor_get_algorithm_http"]["p50_ms"], "ms"),
            _row("  model alone (RUNNERS['echo']) p50", "in-process",
                 realtime["model_direct"]["call"]["p50_ms"], "ms"),
        ]  # fmt: skip
        for role, ms in (realtime.get("cpu_ms_per_call") or {}).items():
            rows.append(_row(f"  CPU per call: {role}", where, ms, "ms"))
        if realtime.get("commits_per_call") is not None:
            rows.append(_row("  database commits per call", where,
                             realtime["commits_per_call"], ""))  # fmt: skip
    echo = figures.get("breakdown/echo")
    if echo:
        total = _get(echo, "steps", "total (tasks.execute)", "p50_ms")
        rows.append(_row("1b one echo job in tasks.execute, p50", "in-process, no broker",
                         total, "ms"))  # fmt: skip
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("benchmark", "configuration", "value", "unit", "goal", "value/goal")
    lines = [
        (
            r["benchmark"],
            r["config"],
            _cell(r["value"]),
            r["unit"],
            r["goal"] or "",
            ""
            if r["ratio_to_goal"] is None
            else f"{r['ratio_to_goal']:.3g} {'ok' if r['meets'] else 'MISSED'}",
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def write_results(
    results: dict[str, Any], folder: Path, *, quick: bool, label: str | None = None
) -> Path:
    folder.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d")
    suffix = ("-quick" if quick else "") + (f"-{label}" if label else "")
    path = folder / f"jobs-{stamp}{suffix}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return path
