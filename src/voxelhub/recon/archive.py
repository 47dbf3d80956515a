"""Read every k-space file in a tar or zip archive, as a scanner sends them, safely.

Members are copied one at a time into a private temporary folder under a name of our own
(never the member's path), with size, count and compression-ratio caps; links, devices and
unsafe names are reported, not followed. Each member yields a result or the reason it could
not be used, so one bad file never stops the batch.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

import h5py

from voxelhub.recon.errors import ReconError
from voxelhub.recon.model import KSpace
from voxelhub.recon.readers import read_kspace

logger = logging.getLogger(__name__)

GIB = 1 << 30
_CHUNK = 1 << 20
_S_IFMT, _S_IFREG = 0o170000, 0o100000

Reader = Callable[[Path], KSpace]


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps that keep a hostile archive from filling the disk or the memory."""

    max_members: int = 1000
    max_member_bytes: int = 16 * GIB
    max_total_bytes: int = 64 * GIB
    max_compression_ratio: float = 200.0


@dataclass(frozen=True)
class MemberResult:
    """What became of one file: its k-space, or why it could not be read."""

    name: str
    kspace: KSpace | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Member:
    name: str
    open: Callable[[], IO[bytes] | None]
    problem: str | None = None


def is_archive(path: str | Path) -> bool:
    """Whether `path` is a zip or tar file (compressed tars included), not HDF5."""
    if h5py.is_hdf5(path):  # its bytes could hold a zip signature by chance
        return False
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def _unsafe(name: str) -> str | None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        return f"unsafe path {name!r} (absolute or leaving the archive); skipped"
    return None


def _zip_members(archive: zipfile.ZipFile, limits: ArchiveLimits) -> Iterator[_Member]:
    for info in archive.infolist():
        if info.is_dir():
            continue
        kind = (info.external_attr >> 16) & _S_IFMT
        problem = _unsafe(info.filename)
        if kind not in (0, _S_IFREG):
            problem = "not a regular file (a link or device); skipped"
        elif info.flag_bits & 0x1:
            problem = "encrypted; skipped"
        elif info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            problem = "suspicious compression ratio (a zip bomb?); skipped"
        yield _Member(info.filename, partial(archive.open, info), problem)


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    for info in archive:
        if info.isdir():
            continue
        problem = _unsafe(info.name)
        if not info.isfile():
            problem = "not a regular file (a link or device); skipped"
        yield _Member(info.name, partial(archive.extractfile, info), problem)


def _copy(source: IO[bytes], target: Path, *, cap: int) -> int:
    copied = 0
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            copied += len(chunk)
            if copied > cap:
                raise ReconError(f"larger than the {cap} bytes allowed; skipped")
            out.write(chunk)
    return copied


class _Budget:
    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits, self.members, self.bytes = limits, 0, 0

    def cap(self) -> int:
        left = self.limits.max_total_bytes - self.bytes
        return min(self.limits.max_member_bytes, left)


def _read_member(member: _Member, folder: Path, *, budget: _Budget, reader: Reader) -> MemberResult:
    if member.problem:
        return MemberResult(member.name, error=member.problem)
    target = folder / str(budget.members) / (PurePosixPath(member.name).name or "member")
    target.parent.mkdir()
    try:
        source = member.open()
        if source is None:
            return MemberResult(member.name, error="could not be extracted")
        with source:
            budget.bytes += _copy(source, target, cap=budget.cap())
        return MemberResult(member.name, kspace=reader(target))
    except ReconError as err:
        return MemberResult(member.name, error=str(err))
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        return MemberResult(member.name, error=f"could not be extracted: {err}")
    except Exception as err:  # a reader's bug or lack of memory fails this member only
        return _unexpected(member.name, err)
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


def _unexpected(name: str, err: Exception) -> MemberResult:
    logger.debug("%s: unexpected error while reading", name, exc_info=True)
    return MemberResult(name, error=f"{type(err).__name__}: {err}")


def _open_members(
    archive: zipfile.ZipFile | tarfile.TarFile, limits: ArchiveLimits
) -> Iterator[_Member]:
    if isinstance(archive, zipfile.ZipFile):
        return _zip_members(archive, limits)
    return _tar_members(archive)


def _open(path: Path) -> zipfile.ZipFile | tarfile.TarFile:
    try:
        return zipfile.ZipFile(path) if zipfile.is_zipfile(path) else tarfile.open(path)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as err:
        raise ReconError(f"{path.name} is not a readable zip or tar archive: {err}") from err


def read_archive(
    path: str | Path, *, limits: ArchiveLimits | None = None, reader: Reader = read_kspace
) -> Iterator[MemberResult]:
    """One result per file in the archive at `path`, in archive order."""
    path, limits = Path(path), limits or ArchiveLimits()
    budget = _Budget(limits)
    with _open(path) as archive, tempfile.TemporaryDirectory(prefix="voxelhub-recon-") as tmp:
        try:
            for member in _open_members(archive, limits):
                if budget.members >= limits.max_members or budget.cap() <= 0:
                    yield MemberResult(member.name, error="archive limits reached; skipped")
                    return
                result = _read_member(member, Path(tmp), budget=budget, reader=reader)
                if result.kspace is not None:  # not the temporary copy, gone once read
                    source = f"{path.name}/{member.name}"
                    result = replace(result, kspace=replace(result.kspace, source=source))
                yield result
                budget.members += 1
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            yield MemberResult(path.name, error=f"the archive is damaged: {err}")


def read_inputs(
    path: str | Path, *, limits: ArchiveLimits | None = None, reader: Reader = read_kspace
) -> Iterator[MemberResult]:
    """Results for a k-space file (one) or for every member of an archive."""
    path = Path(path)
    if path.is_file() and is_archive(path):
        yield from read_archive(path, limits=limits, reader=reader)
        return
    try:
        result = MemberResult(path.name, kspace=reader(path))
    except ReconError as err:
        result = MemberResult(path.name, error=str(err))
    except Exception as err:  # reported as the file's result, as in an archive
        result = _unexpected(path.name, err)
    yield result
