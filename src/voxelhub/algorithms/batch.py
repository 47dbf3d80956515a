"""`voxelhub run ALGORITHM --archive A` without `--case`: every case, a progress bar, a summary.

A job is started for each case of the archive (through the API, as a script would); a case
whose inputs do not fit is not an error of the whole run but a failed row of the summary,
with the server's reason. The jobs are then followed to the end; the command exits 0 only
when every case succeeded.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

FINAL = ("succeeded", "failed", "cancelled")
PAGE = 1000


class ApiError(Exception):
    """The API refused a request; the message is the server's."""


@dataclass
class CaseRun:
    """One case of the run: its job (if one started) and how it ended."""

    case_id: str
    title: str
    job_id: str | None = None
    state: str = "pending"
    reason: str = ""


def call(server: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """One API request; ApiError with the server's message when it is refused."""
    request = urllib.request.Request(
        server.rstrip("/") + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read()).get("message", err.reason)
        except ValueError:
            message = err.reason
        raise ApiError(f"{err.code}: {message}") from err
    except urllib.error.URLError as err:
        raise ApiError(f"cannot reach {server}: {err.reason}") from err


def archive_cases(server: str, token: str, archive: str) -> list[CaseRun]:
    cases: list[CaseRun] = []
    while True:
        page = call(
            server,
            token,
            "GET",
            f"/api/v1/archives/{archive}/cases?offset={len(cases)}&limit={PAGE}",
        )
        cases += [
            CaseRun(str(item["id"]), str(item.get("title") or item["id"])) for item in page["items"]
        ]
        if not page["items"] or len(cases) >= int(page["total"]):
            return cases


def run_archive(
    server: str,
    token: str,
    *,
    algorithm: str,
    archive: str,
    inputs: dict[str, Any],
    console: Console,
    timeout: float = 24 * 3600,
    poll_s: float = 1.0,
) -> list[CaseRun]:
    """Start the algorithm on every case of the archive and follow the jobs to their end."""
    runs = archive_cases(server, token, archive)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(algorithm, total=len(runs), counts="")
        for run in runs:
            body = {"archive_id": archive, "case_id": run.case_id, "inputs": inputs}
            try:
                job = call(server, token, "POST", f"/api/v1/algorithms/{algorithm}/jobs", body)
                run.job_id, run.state = str(job["id"]), str(job["state"])
            except ApiError as err:
                run.state, run.reason = "failed", f"not started: {err}"
            progress.update(task, completed=_finished(runs), counts=_counts(runs))
        deadline = time.monotonic() + timeout
        while _finished(runs) < len(runs) and time.monotonic() < deadline:
            time.sleep(poll_s)
            for run in runs:
                if run.job_id and run.state not in FINAL:
                    _refresh(server, token, run)
            progress.update(task, completed=_finished(runs), counts=_counts(runs))
    for run in runs:
        if run.state not in FINAL:
            run.reason = f"still {run.state} after {timeout:.0f} s"
    return runs


def _refresh(server: str, token: str, run: CaseRun) -> None:
    try:
        job = call(server, token, "GET", f"/api/v1/jobs/{run.job_id}")
    except ApiError as err:
        run.reason = str(err)
        return
    run.state = str(job["state"])
    if run.state in ("failed", "cancelled"):
        run.reason = str(job.get("message") or job.get("outcome") or run.state)


def _finished(runs: list[CaseRun]) -> int:
    return sum(run.state in FINAL for run in runs)


def _counts(runs: list[CaseRun]) -> str:
    done = sum(run.state == "succeeded" for run in runs)
    failed = sum(run.state in ("failed", "cancelled") for run in runs)
    return f"[green]{done} done[/] [red]{failed} failed[/]"


def summary(runs: list[CaseRun], console: Console) -> None:
    """How many cases succeeded, and a table of the others with their reasons."""
    done = [run for run in runs if run.state == "succeeded"]
    others = [run for run in runs if run.state != "succeeded"]
    console.print(f"{len(done)} of {len(runs)} case(s) done, {len(others)} failed")
    if not others:
        return
    table = Table(title="failed")
    for column in ("case", "job", "state", "reason"):
        table.add_column(column)
    for run in others:
        table.add_row(run.title, run.job_id or "-", run.state, run.reason)
    console.print(table)
