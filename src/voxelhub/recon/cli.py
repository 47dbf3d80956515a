"""`voxelhub recon`: reconstruct a fastMRI or ISMRMRD file (or an archive of them) without
a server, writing magnitude images to HDF5.

Registered in the main command line with `app.command("recon")(recon_command)`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import h5py
import typer
from rich.console import Console
from rich.markup import escape

from voxelhub.recon.archive import MemberResult, is_archive, read_inputs
from voxelhub.recon.errors import ReconError
from voxelhub.recon.methods import (
    accepted_settings,
    get_method,
    needs_calibration,
    reconstruct,
)
from voxelhub.recon.model import KSpace, Reconstruction
from voxelhub.recon.output import write_reconstruction
from voxelhub.recon.readers import read_kspace

logger = logging.getLogger(__name__)
console = Console(stderr=True)


def parse_slices(text: str | None, count: int) -> list[int]:
    """Slice indices from "3", "2:6" or "0,4,7" (all slices when `text` is None).

    >>> parse_slices("2:5", 10), parse_slices("1,3", 10), parse_slices(None, 2)
    ([2, 3, 4], [1, 3], [0, 1])
    """
    if text is None:
        return list(range(count))
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            chosen = list(range(count))[slice(int(start or 0), int(stop) if stop else None)]
        else:
            chosen = [int(part) for part in text.split(",")]
    except ValueError as err:
        raise ReconError(f"--slices {text!r}: give N, START:STOP or N,M,..") from err
    if not chosen or any(not 0 <= index < count for index in chosen):
        raise ReconError(f"--slices {text!r} selects nothing of the {count} slices (0-{count - 1})")
    return chosen


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if "," in text:
            return [_value(part) for part in text.split(",")]
        return text


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """Method settings from KEY=VALUE pairs; values are JSON, comma lists or strings.

    >>> parse_settings(["kernel=5,4", "regularization=0.01"])
    {'kernel': [5, 4], 'regularization': 0.01}
    """
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", key.strip()):
            raise ReconError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set kernel=5,4")
        settings[key.strip()] = _value(value.strip())
    return settings


def _group_name(name: str, taken: h5py.Group) -> str:
    """A group name for an archive member: its path made safe, numbered when another member's
    path came out the same ("a b.h5" and "a_b.h5")."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "member"
    chosen, number = base, 1
    while chosen in taken:
        number += 1
        chosen = f"{base}_{number}"
    return chosen


def _run(kspace: KSpace, options: dict[str, Any]) -> tuple[KSpace, Reconstruction]:
    chosen = parse_slices(options["slices"], kspace.slices)
    if len(chosen) != kspace.slices:
        kspace = kspace.with_slices(chosen)
    return kspace, reconstruct(kspace, options["method"], **options["settings"])


def _failed(name: str, reason: str) -> bool:
    console.print(f"[red]failed[/] {escape(name)}: {escape(reason)}")
    return False


def _write(
    out: h5py.File, name: str, *, single: bool, recon: Reconstruction, kspace: KSpace
) -> None:
    """The reconstruction in the file (single input) or in a group of its own, which an
    error while writing removes again, so a failed file leaves nothing half-written."""
    if single:
        write_reconstruction(out, recon, kspace=kspace)
        return
    group_name = _group_name(name, out)
    try:
        write_reconstruction(out.create_group(group_name), recon, kspace=kspace)
    except Exception:
        if group_name in out:
            del out[group_name]
        raise


def _process(
    result: MemberResult, out: h5py.File, *, single: bool, options: dict[str, Any]
) -> bool:
    """Reconstruct and write one file; False (reported) when it failed. Only that file
    fails on any error, expected or not; Ctrl-C and SystemExit still stop the batch."""
    if result.kspace is None:
        return _failed(result.name, str(result.error))
    try:
        kspace, recon = _run(result.kspace, options)
        _write(out, result.name, single=single, recon=recon, kspace=kspace)
    except ReconError as err:
        return _failed(result.name, str(err))
    except Exception as err:  # a bug, lack of (GPU) memory, an HDF5 error: this file only
        logger.debug("%s: unexpected error", result.name, exc_info=True)
        return _failed(result.name, f"{type(err).__name__}: {err}")
    console.print(
        f"[green]done[/] {escape(result.name)}: {recon.images.shape[0]} slices, "
        f"R={kspace.sampling.acceleration}, {recon.seconds_per_slice:.2f} s/slice"
    )
    return True


def _cannot_write(output: Path, reason: str) -> typer.Exit:
    console.print(
        f"[bold red]error:[/] cannot write {escape(str(output))}: {escape(reason)}; "
        "give --output a file path in a folder that exists and that you can write to"
    )
    return typer.Exit(code=2)


@contextmanager
def _temporary_output(output: Path, *, source: Path) -> Iterator[tuple[h5py.File, Path]]:
    """A new HDF5 file beside `output` (same folder, so renaming it over `output` is
    atomic), and its path; removed on leaving, however that happens, unless it was renamed.
    Exit 2 (never a traceback) when `output` is the input or cannot be written."""
    if output.exists() and output.samefile(source):
        console.print(
            f"[bold red]error:[/] --output {escape(str(output))} is the input file; writing "
            "there would destroy it: choose another output path"
        )
        raise typer.Exit(code=2)
    if output.is_dir():
        raise _cannot_write(output, "it is a folder")
    partial_path = output.with_name(f".{output.name}.{secrets.token_hex(4)}.partial")
    try:
        handle = h5py.File(partial_path, "x")
    except OSError as err:
        raise _cannot_write(output, str(err)) from err
    try:
        with handle:
            yield handle, partial_path
    finally:
        partial_path.unlink(missing_ok=True)


def recon_command(
    source: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="fastMRI or ISMRMRD HDF5 file, or a zip/tar of them"
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HDF5 file to write")],
    *,
    method: Annotated[str, typer.Option(help="zero-filled, grappa, raki or rraki")] = "grappa",
    seed: Annotated[int | None, typer.Option(help="Random seed (learned methods)")] = None,
    slices: Annotated[str | None, typer.Option(help="Slices: N, START:STOP or N,M,..")] = None,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="Method setting KEY=VALUE")
    ] = None,
) -> None:
    """Reconstruct undersampled k-space and write the magnitude images as the dataset
    `reconstruction` (slices x rows x columns, float32), settings as attributes.

    For an archive, each file gets a group of its own. The output is written beside OUTPUT
    and renamed over it only when something was reconstructed, so an existing OUTPUT is
    kept when every file fails or on Ctrl-C. Exits 2 on bad input or when nothing could be
    reconstructed, 1 when some files of an archive failed.
    """
    try:
        settings = parse_settings(setting)
        get_method(method)  # an unknown or uninstalled method, named with what to do
        if seed is not None and "seed" in accepted_settings(method):
            settings["seed"] = seed
    except ReconError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        raise typer.Exit(code=2) from err
    options = {"method": method, "settings": settings, "slices": slices}
    single = not is_archive(source)
    # Only methods that calibrate need an ACS block; zero-filled reads data without one.
    reader = partial(read_kspace, require_acs=needs_calibration(method))
    done = failed = 0
    with _temporary_output(output, source=source) as (out, written):
        for result in read_inputs(source, reader=reader):
            ok = _process(result, out, single=single, options=options)
            done, failed = done + ok, failed + (not ok)
        out.close()
        if done:  # an existing output is replaced only by a file that holds results
            try:
                written.replace(output)
            except OSError as err:
                raise _cannot_write(output, str(err)) from err
    if not done:
        raise typer.Exit(code=2)
    if failed:
        raise typer.Exit(code=1)
