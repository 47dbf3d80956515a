"""The object store on a local directory, for single-machine deployments and tests.

Each object is a file under the root. Writes go to a `.tmp-` file in the target directory,
are fsynced and renamed into place, so readers see the old object or the new one, never
part of one. The web app serves `signed_url()` links through `verify_signed()` and
`path_of()`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat as stat_module
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from voxelhub.core import security
from voxelhub.core.objects import localfiles
from voxelhub.core.objects.base import (
    DEFAULT_CHUNK_SIZE,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
)
from voxelhub.core.objects.keys import (
    TEMP_PREFIX,
    content_type_for,
    validate_expires_in,
    validate_key,
    validate_prefix,
)

logger = logging.getLogger(__name__)

URL_PREFIX = "/objects/"
_syncers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="objects-fsync")
# A batch is synced in the calling thread while each fsync is this quick, and in parallel
# from the first slower one on (see `_sync_all`).
_QUICK_FSYNC_S = 0.002
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


# Files written with `durable=False` keep their descriptor open until synced (no reopening
# by path) while there are at most this many; past it they are synced by path.
_OPEN_UNSYNCED_MAX = 256


def _fsync_file(path: Path) -> None:
    """fsync a file by its path; one that is gone since (replaced, deleted) needs none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        localfiles.fsync_directory(path)


class _Unsynced:
    """A file written but not yet fsynced, with its still open descriptor if it has one."""

    __slots__ = ("fd", "path")

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    def sync(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            _fsync_file(self.path)
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def forget(self) -> None:
        """Close the descriptor without syncing (the file was replaced since)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _sync_all(syncs: list[Callable[[], None]]) -> None:
    """Run the fsyncs `syncs`: one after another while that is quick, the rest in parallel.

    On a journalling file system the first fsync of a batch commits the metadata of all of
    it (ext4 writes the data of the others first), so the rest are quick and a thread each
    would only add wake-ups: 0.1-0.2 ms of CPU per object on a 2-core machine. Where an
    fsync waits for the disk (a slow disk, another file system), concurrent ones share its
    flushes, so the rest go to threads.
    """
    for done, sync in enumerate(syncs):
        started = time.monotonic()
        sync()
        if time.monotonic() - started > _QUICK_FSYNC_S:
            list(_syncers.map(lambda later: later(), syncs[done + 1 :]))
            return


_INSIDE_FOLDERS_MAX = 100_000


class LocalObjectStore:
    """Objects as files below `root`; signed URLs are HMAC-signed with `secret_key`."""

    puts_in_parallel = False

    def __init__(self, root: Path, *, secret_key: str) -> None:
        self.root = Path(root).absolute()
        self._pending: dict[Path, _Unsynced] = {}
        self._pending_lock = threading.Lock()
        # Held while a sync runs, so a sync that finds nothing pending returns only after
        # the files another thread took from `_pending` are durable too.
        self._sync_lock = threading.Lock()
        self._secret_key = secret_key
        # Folders known to lie inside the root (see `path_of`).
        self._inside: set[Path] = set()

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self.root)!r})"

    def path_of(self, key: str) -> Path:
        """The file that holds `key` (it may not exist); never a path outside the root.

        Resolving every component of every key costs a system call per folder level, a
        quarter of the server's time when a viewer fetches a series frame by frame; so a
        folder found inside the root is remembered, and only the file itself is checked
        for being a link on each call. A new folder in a remembered one needs only to be no
        link itself (one `lstat`, where resolving it took a dozen calls: an image set per
        series is a new folder per one-image study). (The store never makes links; a folder
        swapped for one later takes someone with write access to the store's disk.)"""
        path = self.root / validate_key(key)
        folder = path.parent
        if folder not in self._inside:
            parent = folder.parent
            if not (parent in self._inside and not folder.is_symlink()):
                if not self._resolves_inside(folder):
                    raise InvalidKey(f"object key {key!r} leads outside the store through a link")
                if parent.is_relative_to(self.root) and self._resolves_inside(parent):
                    self._remember(parent)
            self._remember(folder)
        if path.is_symlink() and not self._resolves_inside(path):
            raise InvalidKey(f"object key {key!r} leads outside the store through a link")
        return path

    def _resolves_inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root.resolve())

    def _remember(self, folder: Path) -> None:
        if len(self._inside) >= _INSIDE_FOLDERS_MAX:
            self._inside.clear()
        self._inside.add(folder)

    def sync(self) -> None:
        """Make the objects written with `durable=False` durable: each file once, and each
        of their folders once (a batch of instances of a series shares one folder)."""
        with self._sync_lock:
            self._sync_pending()

    def _sync_pending(self) -> None:
        with self._pending_lock:
            files, self._pending = self._pending, {}
        folders = {path.parent for path in files}
        try:
            _sync_all(
                [file.sync for file in files.values()]
                + [functools.partial(_fsync_folder, folder) for folder in folders]
            )
        except BaseException:
            with self._pending_lock:  # the next sync tries them again (by path)
                for path, file in files.items():
                    self._pending.setdefault(path, file)
            raise

    def _add_pending(self, path: Path, fd: int) -> None:
        """Remember a file to sync; its descriptor is kept open (or closed, past the most
        kept), and the caller's to close no more."""
        with self._pending_lock:
            keep = len(self._pending) < _OPEN_UNSYNCED_MAX
            replaced = self._pending.pop(path, None)
            self._pending[path] = _Unsynced(path, fd if keep else None)
        if not keep:
            os.close(fd)
        if replaced is not None:
            replaced.forget()

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str | None = None,
        durable: bool = True,
    ) -> ObjectInfo:
        """Store `data` under `key` atomically; file objects are copied chunk by chunk."""
        path = self.path_of(key)
        resolved_type = content_type_for(key, content_type)
        try:
            fd, tmp = localfiles.open_temp(path.parent)
        except (FileExistsError, NotADirectoryError) as err:
            raise self._clash(key) from err
        except OSError as err:
            raise self._write_error(key, err) from err
        committing = False
        try:
            localfiles.write_all(data, fd)
            committing = True
            if resolved_type != content_type_for(key, None):  # else read back as guessed
                localfiles.set_content_type(fd, resolved_type)
            if durable:
                os.fsync(fd)
            info = localfiles.info_from_stat(key, os.fstat(fd), content_type=resolved_type)
            if durable:
                os.close(fd)
                fd = -1
            os.replace(tmp, path)
            if durable:
                localfiles.fsync_directory(path.parent)
            else:
                fd, kept = -1, fd
                self._add_pending(path, kept)
        except BaseException as err:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            translated = self._put_error(key, err, committing=committing)
            if translated is err:
                raise
            raise translated from err
        return info

    def get(self, key: str) -> bytes:
        """The whole content of the object."""
        try:
            return self.path_of(key).read_bytes()
        except _MISSING as err:
            raise ObjectNotFound(key) from err

    def stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The content in chunks; the file is opened (and a missing key raised) right away."""
        return localfiles.read_chunks(self._open(key), chunk_size)

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes `start` up to (not including) `end`; None reads to the end of the object."""
        if start < 0 or (end is not None and end < start):
            raise InvalidRange(f"invalid byte range {start}-{end} for {key!r}")
        with self._open(key) as fh:
            size = os.fstat(fh.fileno()).st_size
            if start > size:
                raise InvalidRange(
                    f"range starts at byte {start} but {key!r} has only {size} bytes"
                )
            fh.seek(start)
            return fh.read() if end is None else fh.read(end - start)

    def stat(self, key: str) -> ObjectInfo:
        """Size, etag, time and content type of the object."""
        path = self.path_of(key)
        try:
            st = path.stat()
        except _MISSING as err:
            raise ObjectNotFound(key) from err
        if not stat_module.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        content_type = localfiles.get_content_type(path) or content_type_for(key, None)
        return localfiles.info_from_stat(key, st, content_type=content_type)

    def exists(self, key: str) -> bool:
        """True when an object is stored under `key`."""
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the object and the directories it leaves empty; a missing key is fine."""
        path = self.path_of(key)
        try:
            path.unlink()
        except _MISSING:
            return
        localfiles.prune_empty_dirs(path.parent, self.root)

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with the non-empty `prefix`; the count."""
        if not prefix:
            raise InvalidKey("delete_prefix() needs a non-empty prefix; it never empties a store")
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, recursively, sorted by key."""
        validate_prefix(prefix)
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        if not start.resolve().is_relative_to(self.root.resolve()):
            return iter(())
        return localfiles.walk_sorted(start, base + "/" if base else "", wanted=prefix)

    def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A root-relative URL `/objects/{key}?expires=...&sig=...` served by the web app."""
        validate_key(key)
        expires_at = int(time.time()) + validate_expires_in(expires_in)
        signature = security.sign_path(self._secret_key, URL_PREFIX + key, expires_at=expires_at)
        query: dict[str, str | int] = {"expires": expires_at, "sig": signature}
        if filename:
            query["filename"] = filename
        return f"{URL_PREFIX}{quote(key)}?{urlencode(query)}"

    def verify_signed(self, key: str, expires_at: int, signature: str) -> bool:
        """True when `signature` was made by `signed_url()` for `key` and has not expired."""
        try:
            validate_key(key)
        except InvalidKey:
            return False
        return security.verify_path(
            self._secret_key, URL_PREFIX + key, expires_at=expires_at, signature=signature
        )

    def check(self) -> None:
        """Raise ObjectStoreError unless the root is a directory we can write to."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
            os.close(fd)
            os.unlink(name)
        except OSError as err:
            raise ObjectStoreError(
                f"the local object store {self.root} is not a writable directory "
                f"({err.strerror or err}); check that the path exists, is a directory and "
                "that the voxelhub user may write to it, or set VOXELHUB_HOME"
            ) from err

    def sweep_temp(self, older_than_seconds: float) -> int:
        """Remove temporary files left by crashed writes; the number removed."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = Path(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    if path.lstat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        if removed:
            logger.info("removed %d stale temporary files from %s", removed, self.root)
        return removed

    def _open(self, key: str) -> BinaryIO:
        try:
            return self.path_of(key).open("rb")
        except _MISSING as err:
            raise ObjectNotFound(key) from err

    def _put_error(self, key: str, err: BaseException, *, committing: bool) -> BaseException:
        """The error put() raises for `err`; errors reading the caller's data stay as they are."""
        if isinstance(err, IsADirectoryError):
            return self._clash(key)
        if isinstance(err, localfiles.DiskWriteError) or (committing and isinstance(err, OSError)):
            return self._write_error(key, err)
        return err

    def _clash(self, key: str) -> InvalidKey:
        return InvalidKey(
            f"cannot store {key!r}: part of it is already an object, or other objects are "
            "stored below it; the local store keeps objects as files, so a key cannot also "
            "be a folder of other keys"
        )

    def _write_error(self, key: str, err: OSError) -> ObjectStoreError:
        return ObjectStoreError(
            f"could not store {key!r} in {self.root} ({err.strerror or err}); "
            "check free disk space and that the voxelhub user may write there"
        )
