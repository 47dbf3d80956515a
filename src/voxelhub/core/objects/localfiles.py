"""File-system steps of the local object store: atomic writes, sorted walks, metadata.

Kept apart from `local.py` so the store itself reads as the object-store contract.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat as stat_module
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from voxelhub.core.objects.base import DEFAULT_CHUNK_SIZE, InvalidArgument, ObjectInfo
from voxelhub.core.objects.keys import TEMP_PREFIX

logger = logging.getLogger(__name__)

CONTENT_TYPE_XATTR = "user.voxelhub.content_type"
_TEMP_FILE_ATTEMPTS = 5
_NO_XATTR_ERRNOS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA}


def open_temp(directory: Path) -> tuple[int, Path]:
    """Create a recognisable temporary file in `directory` (made if missing); fd and path.

    The file is tried first and the folder made only when it is missing: most writes go to
    a folder that exists, and making it first costs two system calls each time. A
    concurrent delete may remove the directory once it is empty, between our mkdir and
    the file's creation; creating it again is then the right thing to do.
    """
    for _ in range(_TEMP_FILE_ATTEMPTS - 1):
        with contextlib.suppress(FileNotFoundError):
            return _mkstemp(directory)
        directory.mkdir(parents=True, exist_ok=True)
    return _mkstemp(directory)


def _mkstemp(directory: Path) -> tuple[int, Path]:
    # mkstemp's 0600 mode is on purpose: objects hold patient data.
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    return fd, Path(name)


class DiskWriteError(OSError):
    """Writing to the store's own disk failed (as opposed to reading the caller's data)."""


def write_all(data: bytes | BinaryIO, fd: int) -> None:
    """Write `data` to `fd`, reading file objects chunk by chunk.

    Errors from reading `data` propagate unchanged; errors from writing become
    DiskWriteError so the store can tell the two apart.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        # Straight to the descriptor: a file object around it costs three system calls.
        with _disk_errors(), memoryview(data) as view, view.cast("B") as flat:
            written = 0
            while written < len(flat):
                written += os.write(fd, flat[written:])
        return
    with open(fd, "wb", closefd=False) as out:
        while chunk := data.read(DEFAULT_CHUNK_SIZE):
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise InvalidArgument(
                    f"put() read {type(chunk).__name__} from the file object; "
                    "open the file in binary mode ('rb')"
                )
            with _disk_errors():
                out.write(chunk)
        with _disk_errors():
            out.flush()


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise DiskWriteError(err.errno, err.strerror) from err


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_empty_dirs(directory: Path, root: Path) -> None:
    """Remove `directory` and its parents below `root` while they are empty."""
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def set_content_type(fd: int, content_type: str) -> None:
    """Remember the content type in an extended attribute, where the file system has them."""
    setxattr = getattr(os, "setxattr", None)
    if setxattr is None:
        return
    try:
        setxattr(fd, CONTENT_TYPE_XATTR, content_type.encode())
    except OSError as err:
        if err.errno not in _NO_XATTR_ERRNOS:
            raise
        logger.debug("no extended attributes here; content types will be guessed", exc_info=True)


def get_content_type(path: Path) -> str | None:
    """The content type `set_content_type` stored, or None."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return None
    try:
        value: bytes = getxattr(path, CONTENT_TYPE_XATTR)
    except OSError:
        return None
    return value.decode(errors="replace")


def info_from_stat(key: str, st: os.stat_result, *, content_type: str | None) -> ObjectInfo:
    """An ObjectInfo whose etag changes when the file is replaced or rewritten."""
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}",
        last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
        content_type=content_type,
    )


def walk_sorted(directory: Path, key_prefix: str, *, wanted: str) -> Iterator[ObjectInfo]:
    """Regular files below `directory` whose key starts with `wanted`, in key order.

    Sorting each directory by `name + "/"` for subdirectories and `name` for files yields
    global key order. Symbolic links and temporary files are skipped, so a walk never
    leaves the root.
    """
    try:
        with os.scandir(directory) as scan:
            entries = sorted(
                (
                    (entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""), entry)
                    for entry in scan
                    if not entry.name.startswith(TEMP_PREFIX) and not entry.is_symlink()
                ),
                key=lambda pair: pair[0],
            )
    except (FileNotFoundError, NotADirectoryError):
        return
    for sort_name, entry in entries:
        key = key_prefix + sort_name
        if sort_name.endswith("/"):
            if key.startswith(wanted) or wanted.startswith(key):
                yield from walk_sorted(Path(entry.path), key, wanted=wanted)
            continue
        if not key.startswith(wanted):
            continue
        with contextlib.suppress(FileNotFoundError):
            st = entry.stat(follow_symlinks=False)
            if stat_module.S_ISREG(st.st_mode):
                yield info_from_stat(key, st, content_type=None)


def read_chunks(fh: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Yield the rest of `fh` in chunks and close it."""
    with fh:
        while chunk := fh.read(chunk_size):
            yield chunk
