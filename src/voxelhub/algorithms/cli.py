"""`voxelhub run`: start an algorithm on a case through the API, and optionally wait."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console()
FINAL = ("succeeded", "failed", "cancelled")


def _call(server: str, token: str, method: str, path: str, body: Any = None) -> Any:
    from voxelhub.algorithms.batch import ApiError, call

    try:
        return call(server, token, method, path, body)
    except ApiError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(code=2) from err


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """`iface=case_interface` takes a value of the case; `iface:=JSON` gives one inline."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        if ":=" in pair:
            name, raw = pair.split(":=", 1)
            try:
                inputs[name] = {"value": json.loads(raw)}
            except json.JSONDecodeError as err:
                raise typer.BadParameter(f"{pair!r}: the value after := must be JSON") from err
        elif "=" in pair:
            name, source = pair.split("=", 1)
            inputs[name] = {"from_case": source}
        else:
            raise typer.BadParameter(f"{pair!r}: write INPUT=CASE_VALUE or INPUT:=JSON")
    return inputs


def run_command(
    algorithm: Annotated[str, typer.Argument(help="The algorithm's slug")],
    archive: Annotated[str, typer.Option(help="Archive id")],
    case: Annotated[
        str | None,
        typer.Option(help="Case id (its values are the inputs); leave out to run every case"),
    ] = None,
    *,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", help="INPUT=CASE_VALUE or INPUT:=JSON (repeatable)"),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job and print how it ended")] = False,
    server: Annotated[
        str, typer.Option(envvar="VOXELHUB_SERVER", help="Base URL of the platform")
    ] = "http://127.0.0.1:8000",
    token: Annotated[str | None, typer.Option(envvar="VOXELHUB_TOKEN", help="API token")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 3600,
) -> None:
    """Run an algorithm on a case; with --wait, exit 0 only when the job succeeded.

    Without --case it runs on every case of the archive, shows a progress bar, waits and
    prints a summary (done, failed with reasons); exit 0 only when every case succeeded.
    """
    if not token:
        console.print("[bold red]error:[/] give --token or set VOXELHUB_TOKEN")
        raise typer.Exit(code=2)
    if case is None:
        _run_archive(
            server,
            token,
            algorithm,
            archive=archive,
            inputs=_parse_inputs(inputs or []),
            timeout=timeout,
        )
        return
    body = {"archive_id": archive, "case_id": case, "inputs": _parse_inputs(inputs or [])}
    job = _call(server, token, "POST", f"/api/v1/algorithms/{algorithm}/jobs", body)
    out.print(f"job {job['id']} {job['state']}")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for job {job['id']}…"):
        while job["state"] not in FINAL:
            if time.monotonic() > deadline:
                console.print(f"[bold red]error:[/] job {job['id']} still {job['state']}")
                raise typer.Exit(code=2)
            time.sleep(1)
            job = _call(server, token, "GET", f"/api/v1/jobs/{job['id']}")
    out.print(f"job {job['id']} {job['state']}" + (f": {job['message']}" if job["message"] else ""))
    for name, value in (job.get("outputs") or {}).items():
        out.print(f"  {name} → {value.get('interface')} ({value.get('kind')})")
    if job["state"] != "succeeded":
        raise typer.Exit(code=1)


def _run_archive(
    server: str, token: str, algorithm: str, *, archive: str, inputs: dict[str, Any], timeout: float
) -> None:
    from voxelhub.algorithms import batch

    try:
        runs = batch.run_archive(
            server,
            token,
            algorithm=algorithm,
            archive=archive,
            inputs=inputs,
            console=console,
            timeout=timeout,
        )
    except batch.ApiError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(code=2) from err
    batch.summary(runs, out)
    if any(run.state != "succeeded" for run in runs):
        raise typer.Exit(code=1)
