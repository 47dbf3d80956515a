"""`voxelhub upload`: send files, folders, zip and tar archives to a server, resumably.

Registered in the main command line with `app.command("upload")(upload_command)`;
`upload()` is the same with a progress bar and the printed report, for other callers.
Warnings of stored files and converted series (a NIfTI placed by one of two disagreeing
transforms, slices resampled for a gantry tilt) are listed after the tables; they do
not change the exit status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from voxelhub.core.errors import VoxelhubError
from voxelhub.ingest.client import DEFAULT_CHUNK, upload_files

console = Console(stderr=True)
out = Console()

_STYLE = {"stored": "green", "duplicate": "cyan", "skipped": "yellow", "rejected": "red",
          "converted": "green", "series_only": "green", "failed": "red"}  # fmt: skip


def _what(entry: dict[str, Any]) -> str:
    if entry.get("reason"):
        return str(entry["reason"])
    if entry.get("sop_instance_uid"):
        return f"series {entry['series_instance_uid']}"
    if entry.get("case_id"):
        return f"case {entry['case_id']} · {entry['interface']}"
    return ""


def _styled(outcome: str) -> str:
    return f"[{_STYLE.get(outcome, 'white')}]{outcome}[/]"


def _flagged(text: str, entry: dict[str, Any]) -> str:
    """`text` (escaped) and, when the entry has warnings, how many (listed below the tables)."""
    count = len(entry.get("warnings") or ())
    if not count:
        return escape(text)
    flag = f"[yellow]{count} warning{'s' if count > 1 else ''}[/]"
    return f"{escape(text)}\n{flag}" if text else flag


def _print_warnings(report: dict[str, Any], console: Console) -> None:
    """Each warning of a file or series, in full: they were stored, but a person should know."""
    found = [(entry["path"], w) for entry in report["files"] for w in entry.get("warnings") or ()]
    found += [
        (f"series {item['series_instance_uid']}", w)
        for item in report.get("series") or ()
        for w in item.get("warnings") or ()
    ]
    if not found:
        return
    console.print("[bold yellow]Warnings[/] (stored, but worth knowing):")
    for where, warning in found:
        console.print(f"  [yellow]warning[/] {escape(where)}: {escape(warning)}")


def _series_table(items: list[dict[str, Any]]) -> Table:
    table = Table("series", "modality", "instances", "outcome", "case · values",
                  title="DICOM series")  # fmt: skip
    for item in items:
        values = " + ".join(v for v in (item.get("interface"), item.get("volume_interface")) if v)
        where = f"{item.get('case_title') or '-'} · {values}"
        if item.get("reason"):
            where += f"\n{item['reason']}"
        table.add_row(escape(item["series_instance_uid"]), escape(item["modality"]),
                      str(item["number_of_instances"]), _styled(item["outcome"]),
                      _flagged(where, item))  # fmt: skip
    return table


def print_report(report: dict[str, Any], console: Console = out) -> None:
    """The per-file and per-series report as tables, their warnings, then the counts."""
    files = Table("file", "format", "outcome", "reason / result", title="Files")
    for entry in report["files"]:
        files.add_row(escape(entry["path"]), entry.get("format") or "-",
                      _styled(entry["outcome"]), _flagged(_what(entry), entry))  # fmt: skip
    console.print(files)
    if report.get("series"):
        console.print(_series_table(report["series"]))
    _print_warnings(report, console)
    counts = ", ".join(f"{n} {what}" for what, n in sorted(report["counts"].items()))
    console.print(f"upload {report['upload_id']}: [bold]{report['state']}[/] ({counts})")


def upload(
    paths: list[Path],
    archive: str,
    *,
    server: str,
    token: str,
    chunk_size: int = DEFAULT_CHUNK,
    resume: str | None = None,
) -> dict[str, Any]:
    """Upload with a progress bar of bytes, print the report and return it."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("uploading", total=None)

        def advance(name: str, sent: int, total: int) -> None:
            bar.update(task, completed=sent, total=total, description=f"uploading {name}")

        opened_ids: list[str] = []

        def opened(upload_id: str) -> None:
            opened_ids.append(upload_id)
            bar.console.print(f"upload {upload_id}")

        try:
            report = upload_files(paths, archive, server=server, token=token,
                                  chunk_size=chunk_size, resume=resume, progress=advance,
                                  on_open=opened)  # fmt: skip
        except KeyboardInterrupt:
            # Without the id the bytes sent so far could not be resumed.
            if opened_ids:
                bar.console.print(f"interrupted: continue with --resume {opened_ids[0]}")
            raise
        bar.update(task, description="uploaded")
    print_report(report)
    return report


def upload_command(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, help="Files, folders, zip or tar archives")
    ],
    archive: Annotated[str, typer.Option("--archive", help="Archive name (or id) to upload into")],
    *,
    server: Annotated[
        str, typer.Option(envvar="VOXELHUB_SERVER", help="Base URL of the platform")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None,
        typer.Option(envvar="VOXELHUB_TOKEN", help="API token (`voxelhub token create`)"),
    ] = None,
    chunk_mb: Annotated[int, typer.Option(min=1, help="Chunk size in MiB")] = DEFAULT_CHUNK >> 20,
    resume: Annotated[
        str | None, typer.Option(help="Continue the upload with this id after an interruption")
    ] = None,
) -> None:
    """Upload files, folders, zip or tar archives into an archive and print what became of each.

    Interrupted transfers are resumed; exits 1 when a file was rejected, 2 on errors.
    """
    if not token:
        console.print("[bold red]error:[/] give --token or set VOXELHUB_TOKEN")
        raise typer.Exit(code=2)
    try:
        report = upload(paths, archive, server=server, token=token,
                            chunk_size=chunk_mb << 20, resume=resume)  # fmt: skip
    except VoxelhubError as err:
        console.print(f"[bold red]error:[/] {err.message}")
        raise typer.Exit(code=2) from err
    except KeyboardInterrupt as err:
        raise typer.Exit(code=130) from err
    if report["state"] != "done" or report["counts"].get("rejected"):
        raise typer.Exit(code=1)
