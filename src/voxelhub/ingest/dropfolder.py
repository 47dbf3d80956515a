"""A drop folder: files or folders put in a directory are ingested like an upload.

    drop/                 where modalities and people put files, zips or whole folders
    drop/processing/      claimed entries, being ingested
    drop/done/            ingested entries
    drop/failed/          entries with rejected files, each with `<name>.error.txt`

An entry is taken only when it has been still for `settle_seconds`: the same size, file
count and newest mtime at every poll for that long by this host's clock, and the newest
mtime at least that old (the clock of a network share's writer may be behind ours). So a
modality that is still writing is left alone. Names starting with '.' or ending in
.tmp/.part are skipped as being written. The state lives in the folders: an entry found in
`processing/` after a restart is ingested again, which is safe because ingest is
idempotent. Polling only; no inotify needed.

An entry that cannot be read completely (a truncated DICOM or archive, an HDF5 file that
does not open, an empty file) has been still for the settle time, so it is taken to be
complete and goes to `failed/` with the reason, unless it is still being written: it
changed while it was read, or a process on this host holds one of its files open for
writing (a writer that stalled; the smbd or nfsd process of a share served from this host
is seen when this process may list its open files, as root or as the same user). Such an
entry is put back where it was and tried again once it has changed and settled, or after
`retry_seconds`; if it stays unchanged for `give_up_seconds` it goes to `failed/` even
so. Writers that cannot be seen (on other hosts, or other users' processes) are judged
by the settle time alone, which then has to be longer than their stalls. Content that is
not an image format at all goes to `failed/` at once. Names in `done/` and `failed/`
never replace one another.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from voxelhub.archives.models import Archive
from voxelhub.auth import audit
from voxelhub.core.db import session_scope
from voxelhub.core.objects import ObjectStoreError
from voxelhub.core.runtime import Runtime
from voxelhub.ingest import service
from voxelhub.ingest.errors import DropFolderError
from voxelhub.ingest.limits import DEFAULT_LIMITS, Limits
from voxelhub.ingest.models import UploadSource
from voxelhub.ingest.ranges import ByteSpan
from voxelhub.ingest.schemas import UploadReport

logger = logging.getLogger(__name__)

PROCESSING, DONE, FAILED = "processing", "done", "failed"
_RESERVED = frozenset({PROCESSING, DONE, FAILED})
_BEING_WRITTEN = (".tmp", ".part", ".partial", ".filepart", ".crdownload")
# Failures that are the platform's, not the file's: the entry is tried again later.
_TRANSIENT = (OperationalError, ObjectStoreError)

Signature = tuple[int, int, int]
_PROC = Path("/proc")

# The one rejection that more bytes cannot cure: the content is no known format at all (an
# empty file, a cut-off archive or an unreadable header may be a writer that stalled).
_NOT_AN_IMAGE = "the content is not a recognised image format"


@dataclass(frozen=True)
class DropResult:
    """What happened to one entry: moved to `done` or `failed`, left in `processing` to
    `retry` (the platform failed), or put back as `incomplete` (to be tried again)."""

    name: str
    outcome: str
    report: UploadReport | None = None
    error: str = ""


def _candidate(entry: Path) -> bool:
    name = entry.name
    return not (
        name in _RESERVED
        or name.startswith(".")
        or name.lower().endswith(_BEING_WRITTEN)
        or entry.is_symlink()
    )


def _files(entry: Path) -> Iterator[Path]:
    if entry.is_file():
        yield entry
        return
    for path in sorted(entry.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def signature(entry: Path) -> Signature | None:
    """(bytes, newest mtime in ns, number of files) of a file or folder; None if it vanished."""
    try:
        paths = [entry, *entry.rglob("*")] if entry.is_dir() else [entry]
        stats = [p.lstat() for p in paths]
    except OSError:
        return None
    size = sum(s.st_size for s in stats if stat.S_ISREG(s.st_mode))
    return (size, max(s.st_mtime_ns for s in stats), len(stats))


def _content(entry: Path) -> Signature:
    """(bytes, newest mtime in ns, number) of the files of an entry, not of its folders.

    What a writer changes; unlike `signature`, moving the entry cannot change it.
    """
    stats = []
    for path in _files(entry):
        try:
            stats.append(path.stat())
        except OSError:
            continue
    newest = max((s.st_mtime_ns for s in stats), default=0)
    return (sum(s.st_size for s in stats), newest, len(stats))


def open_for_writing(paths: list[Path]) -> bool | None:
    """Whether a process on this host holds one of `paths` open for writing.

    Read from /proc (Linux): True when one does, False when none does, None when that
    cannot be told (no /proc, or processes of other users whose open files this process
    may not list). Writers on other hosts of a network share never show.
    """
    wanted = {}
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        wanted[(info.st_dev, info.st_ino)] = path.name
    if not wanted or not (_PROC / "self" / "fdinfo").is_dir():
        return None if wanted else False
    names = set(wanted.values())
    complete = True
    for process in _PROC.iterdir():
        if not process.name.isdigit():
            continue
        try:
            fds = os.listdir(process / "fd")
        except PermissionError:
            complete = False
            continue
        except OSError:  # the process ended
            continue
        if any(_writes(process, fd, wanted, names) for fd in fds):
            return True
    return False if complete else None


def _writes(process: Path, fd: str, wanted: dict[tuple[int, int], str], names: set[str]) -> bool:
    """Whether the process's descriptor `fd` is one of `wanted`, open for writing."""
    link = process / "fd" / fd
    try:
        # The name first: a stat of every descriptor could wait on a hung network mount.
        if os.path.basename(os.readlink(link)) not in names:
            return False
        info = link.stat()
        if (info.st_dev, info.st_ino) not in wanted:
            return False
        fields = (process / "fdinfo" / fd).read_text().split()
        flags = int(fields[fields.index("flags:") + 1], 8)
    except (OSError, ValueError, IndexError):
        return False
    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or a name no other entry has there (a random part, not only the time)."""
    target = folder / name
    while target.exists() or target.with_name(f"{target.name}.error.txt").exists():
        target = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-{name}"
    return target


def _maybe_incomplete(report: UploadReport) -> bool:
    """Whether a rejected file might be one still being written (more bytes could fix it)."""
    return any(
        f.outcome == "rejected" and not f.reason.startswith(_NOT_AN_IMAGE) for f in report.files
    )


class DropFolder:
    """Watch `path` and ingest what settles there into the archive named `archive_name`."""

    def __init__(
        self,
        path: Path,
        archive_name: str,
        *,
        runtime: Runtime,
        settle_seconds: float = 2.0,
        retry_seconds: float = 30.0,
        give_up_seconds: float = 600.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.path = Path(path)
        self.archive_name = archive_name
        self.runtime = runtime
        self.settle_seconds = settle_seconds
        self.retry_seconds = retry_seconds
        self.give_up_seconds = give_up_seconds
        self.limits = limits
        # Each entry's signature and when (monotonic ns) it was first seen so. Lost on a
        # restart, which only means every entry is watched for the settle time again.
        self._seen: dict[str, tuple[Signature, int]] = {}
        # Entries put back as incomplete: their signature then, and when to try them again
        # unchanged. Lost on a restart, which only means they are tried once more sooner.
        self._incomplete: dict[str, tuple[Signature, int]] = {}
        for folder in (PROCESSING, DONE, FAILED):
            (self.path / folder).mkdir(parents=True, exist_ok=True)

    def stable_entries(self) -> list[Path]:
        """Entries unchanged for `settle_seconds` (by our clock and by their mtime).

        An entry put back as incomplete is left out until it changes or is due again.
        """
        now_ns, seen_ns = time.time_ns(), time.monotonic_ns()
        settle_ns = int(self.settle_seconds * 1e9)
        stable: list[Path] = []
        current: dict[str, tuple[Signature, int]] = {}
        for entry in sorted(self.path.iterdir()):
            if not _candidate(entry) or (sig := signature(entry)) is None:
                continue
            before = self._seen.get(entry.name)
            if before is None or before[0] != sig:
                current[entry.name] = (sig, seen_ns)
                continue
            current[entry.name] = before
            if seen_ns - before[1] < settle_ns or now_ns - sig[1] < settle_ns:
                continue
            waiting = self._incomplete.get(entry.name)
            if waiting is None or waiting[0] != sig or now_ns >= waiting[1]:
                stable.append(entry)
        self._seen = current
        self._incomplete = {k: v for k, v in self._incomplete.items() if k in current}
        return stable

    def run_once(self) -> list[DropResult]:
        """Ingest what was left in `processing/`, then every entry that has settled."""
        archive_id = self._archive_id()
        results = [self._ingest(entry, archive_id) for entry in self._leftovers()]
        for entry in self.stable_entries():
            claimed = _free_name(self.path / PROCESSING, entry.name)
            try:
                entry.rename(claimed)
            except OSError:
                logger.warning("could not claim %s", entry, exc_info=True)
                continue
            self._seen.pop(entry.name, None)
            self._incomplete.pop(entry.name, None)
            results.append(self._ingest(claimed, archive_id, name=entry.name))
        return results

    def run_forever(self, stop_event: threading.Event, *, poll_seconds: float = 1.0) -> None:
        """Poll until `stop_event` is set; an error in one round is logged, not raised."""
        interval = min(poll_seconds, max(self.settle_seconds / 2, 0.05))
        failures = 0
        while not stop_event.is_set():
            try:
                self.run_once()
                failures = 0
            except Exception as err:
                failures += 1
                # The traceback once; then one line, and back off (up to a minute).
                logger.error(
                    "drop folder %s: a polling round failed (%d in a row): %s",
                    self.path,
                    failures,
                    err,
                    exc_info=failures == 1,
                )
            stop_event.wait(min(interval * 2 ** min(failures, 10), 60.0) if failures else interval)

    def _leftovers(self) -> list[Path]:
        return sorted(p for p in (self.path / PROCESSING).iterdir() if not p.is_symlink())

    def _archive_id(self) -> uuid.UUID:
        with session_scope(self.runtime.database_url) as db:
            archive_id = db.scalar(select(Archive.id).where(Archive.name == self.archive_name))
        if archive_id is None:
            raise DropFolderError(
                f"the drop folder {self.path} is set to archive {self.archive_name!r}, which "
                "does not exist; create it with `voxelhub archive create`"
            )
        return archive_id

    def _ingest(self, entry: Path, archive_id: uuid.UUID, *, name: str = "") -> DropResult:
        before = _content(entry)
        try:
            report = self._process(entry, archive_id)
        except _TRANSIENT as err:
            logger.warning("drop folder: %s will be retried: %s", entry.name, err)
            return DropResult(entry.name, "retry", error=str(err))
        except Exception as err:
            logger.error("drop folder: ingesting %s failed", entry.name, exc_info=True)
            return self._finish(entry, None, f"ingest failed: {type(err).__name__}: {err}")
        rejected = [f for f in report.files if f.outcome == "rejected"]
        failed_series = [s for s in report.series if s.outcome == "failed"]
        lines = [f"{f.path}: {f.reason}" for f in rejected]
        lines += [f"series {s.series_instance_uid}: {s.reason}" for s in failed_series]
        errors = "\n".join(lines)
        if rejected and _maybe_incomplete(report) and self._being_written(entry, before):
            return self._put_back(entry, name=name or entry.name, report=report, errors=errors)
        return self._finish(entry, report, errors)

    def _being_written(self, entry: Path, before: Signature) -> bool:
        """Whether an entry that could not be read completely may still be being written.

        It may if its files changed while they were read, or if a process here holds one
        of them open for writing, as long as they changed within `give_up_seconds` (a
        writer that writes nothing for that long is taken to be gone). Otherwise the entry
        has been still for the settle time: it is complete, and invalid.
        """
        after = _content(entry)
        if after != before:
            return True
        if time.time_ns() - after[1] >= int(self.give_up_seconds * 1e9):
            return False
        return open_for_writing(list(_files(entry))) is True

    def _put_back(self, entry: Path, *, name: str, report: UploadReport, errors: str) -> DropResult:
        """Return an entry that may still be being written to the drop folder, to wait."""
        target = _free_name(self.path, name)
        entry.rename(target)
        sig = signature(target)
        if sig is not None:
            retry_ns = time.time_ns() + int(self.retry_seconds * 1e9)
            give_up_ns = sig[1] + int(self.give_up_seconds * 1e9)
            self._incomplete[target.name] = (sig, min(retry_ns, give_up_ns))
            self._seen[target.name] = (sig, time.monotonic_ns())
        logger.warning(
            "drop folder: %s cannot be read completely and is still being written; left in "
            "place and tried again when it changes or in %g s (to failed/ once unchanged for "
            "%g s): %s",
            target.name, self.retry_seconds, self.give_up_seconds, errors.replace("\n", "; "),
        )  # fmt: skip
        return DropResult(target.name, "incomplete", report, errors)

    def _process(self, entry: Path, archive_id: uuid.UUID) -> UploadReport:
        store = self.runtime.store
        with session_scope(self.runtime.database_url) as db:
            session = service.open_upload(
                db, archive_id, user_id=None, source=UploadSource.dropfolder
            )
            for path in _files(entry):
                name = path.relative_to(entry.parent).as_posix()
                with path.open("rb") as body:
                    span = ByteSpan.whole(os.fstat(body.fileno()).st_size)
                    service.receive_chunk(
                        db, store, session, name=name, span=span, body=body, limits=self.limits
                    )
            report = service.process_upload(db, store, session, limits=self.limits)
            audit.record(
                db,
                None,
                "upload.complete",
                object_type="upload",
                object_id=session.id,
                detail={"via": "dropfolder", "entry": entry.name, "counts": report.counts},
            )
        return report

    def _finish(self, entry: Path, report: UploadReport | None, errors: str) -> DropResult:
        ok = report is not None and report.state == "done" and not errors
        folder = self.path / (DONE if ok else FAILED)
        target = _free_name(folder, entry.name)
        entry.rename(target)
        if not ok:
            (folder / f"{target.name}.error.txt").write_text(errors + "\n")
        logger.info("drop folder: %s → %s", entry.name, target)
        return DropResult(entry.name, DONE if ok else FAILED, report, errors)
