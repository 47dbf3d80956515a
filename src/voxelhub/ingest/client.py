"""Uploading files, folders, zip and tar archives through the REST API, resumably.

Each file goes in chunks with `Content-Range`. When the connection drops or the server
answers 5xx, the client waits, asks the server how far the file got and sends the rest;
an upload that cannot finish can be continued later by its id (`resume=`). Standard
library HTTP only, so the client needs nothing beyond the package.

>>> report = upload_files([Path("study.zip")], "Lung CT", server="http://localhost:8000",
...                       token="vxh_…")  # doctest: +SKIP
>>> report["counts"]  # doctest: +SKIP
{'stored': 240, 'series_converted': 2}
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from voxelhub.ingest.errors import UploadClientError

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 8 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_T = TypeVar("_T")
Progress = Callable[[int], None]


class Transient(Exception):
    """A dropped connection or an answer worth retrying."""


@dataclass(frozen=True)
class LocalFile:
    path: Path
    name: str
    size: int


def _folder_items(folder: Path) -> list[tuple[str, Path]]:
    base = folder.resolve().name or "upload"
    return [
        (f"{base}/{p.relative_to(folder).as_posix()}", p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    ]


def collect(paths: list[Path]) -> list[LocalFile]:
    """The files to send: each file under its name, each folder's files under `folder/…`."""
    found: dict[str, LocalFile] = {}
    for given in paths:
        path = given.expanduser()
        if path.is_dir():
            items = _folder_items(path)
        elif path.is_file():
            items = [(path.name, path)]
        else:
            raise UploadClientError(f"{given} is neither a file nor a folder")
        for name, file in items:
            if name in found:
                raise UploadClientError(f"two files would be uploaded as {name!r}; rename one")
            found[name] = LocalFile(file, name, file.stat().st_size)
    if not found:
        raise UploadClientError("there is nothing to upload: the paths hold no files")
    return list(found.values())


def urlopen(request: urllib.request.Request, *, timeout: float) -> Any:
    """Send `request` (a seam: tests replace it to drop connections)."""
    return urllib.request.urlopen(request, timeout=timeout)


class ApiClient:
    """The few calls of the uploads API, with retries on dropped connections."""

    def __init__(self, server: str, token: str, *, retries: int = 5, backoff: float = 0.5) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.retries = retries
        self.backoff = backoff
        self.timeout = 300.0

    def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The JSON answer; Transient for what a retry may fix, UploadClientError otherwise."""
        request = urllib.request.Request(
            self.server + path, data=body, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                     **(headers or {})},
        )  # fmt: skip
        try:
            with urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise _http_error(err) from err
        except (urllib.error.URLError, ConnectionError, TimeoutError,
                http.client.HTTPException) as err:  # fmt: skip
            raise Transient(f"{method} {path}: {err}") from err
        return json.loads(raw) if raw else None

    def retrying(self, what: str, action: Callable[[], _T]) -> _T:
        """`action()`, tried again after a pause while it fails transiently."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except Transient as err:
                if attempt == self.retries:
                    raise UploadClientError(f"{what} failed {attempt + 1} times: {err}") from err
                logger.info("%s failed (%s); retrying", what, err)
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def archive_id(self, archive: str) -> str:
        """The id of the archive named `archive` (or `archive` itself when it is an id)."""
        try:
            return str(uuid.UUID(archive))
        except ValueError:
            pass
        listed = self.retrying("listing archives", lambda: self.call("GET", "/api/v1/archives"))
        for item in listed:
            if item["name"] == archive:
                return str(item["id"])
        raise UploadClientError(f"no archive named {archive!r} that you can see")

    def received(self, upload_id: str) -> dict[str, int]:
        status = self.retrying(
            "asking for the upload's state",
            lambda: self.call("GET", f"/api/v1/uploads/{upload_id}"),
        )
        return {f["name"]: int(f["received"]) for f in status["files"]}

    def put(self, upload_id: str, file: LocalFile, *, offset: int, chunk: int) -> int:
        """Send the chunk of `file` at `offset`; the bytes the server holds afterwards."""
        with file.path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read(chunk)
        span = f"bytes {offset}-{offset + len(data) - 1}/{file.size}" if data else "bytes */0"
        name = urllib.parse.quote(file.name, safe="/")
        try:
            answer = self.call("PUT", f"/api/v1/uploads/{upload_id}/files/{name}", body=data,
                               headers={"Content-Range": span,
                                        "Content-Type": "application/octet-stream"})  # fmt: skip
        except UploadClientError as err:
            if err.detail.get("error") == "offset_mismatch":
                return int(err.detail["detail"]["received"])
            raise
        return int(answer["received"])


def _http_error(err: urllib.error.HTTPError) -> Exception:
    try:
        body = json.loads(err.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    message = body.get("message") or err.reason
    if err.code in _RETRY_STATUS:
        return Transient(f"HTTP {err.code}: {message}")
    return UploadClientError(f"the server refused: {message} (HTTP {err.code})", detail=body)


def send_file(
    client: ApiClient, upload_id: str, file: LocalFile, *, have: dict[str, int], chunk: int,
    progress: Progress,
) -> None:  # fmt: skip
    """Send what the server lacks of `file`; after a dropped connection, go on where it is."""
    offset, failures = have.get(file.name, 0), 0
    # An empty file is sent once, as one empty chunk, unless the server has it already.
    empty_pending = file.size == 0 and file.name not in have
    progress(offset)
    while offset < file.size or empty_pending:
        try:
            offset = client.put(upload_id, file, offset=offset, chunk=chunk)
            empty_pending, failures = False, 0
        except Transient as err:
            failures += 1
            if failures > client.retries:
                raise UploadClientError(
                    f"sending {file.name} failed {failures} times ({err}); continue later "
                    f"with resume={upload_id}"
                ) from err
            time.sleep(client.backoff * 2 ** (failures - 1))
            now = client.received(upload_id)
            offset = now.get(file.name, 0)
            empty_pending = file.size == 0 and file.name not in now
        progress(offset)


def upload_files(
    paths: list[Path],
    archive: str,
    *,
    server: str,
    token: str,
    chunk_size: int = DEFAULT_CHUNK,
    resume: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    client: ApiClient | None = None,
    on_open: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Upload files, folders and archives into `archive`; the server's report.

    `progress(name, sent_bytes_total, total_bytes)` is called as bytes are acknowledged;
    `on_open(upload_id)` once the upload exists, before any byte is sent, so that a caller
    interrupted later can still name the upload to resume.
    """
    files = collect(paths)
    api = client or ApiClient(server, token)
    if resume is None:
        archive_id = api.archive_id(archive)
        opened = api.retrying("opening the upload", lambda: api.call(
            "POST", "/api/v1/uploads", body=json.dumps({"archive_id": archive_id}).encode(),
            headers={"Content-Type": "application/json"}))  # fmt: skip
        resume = str(opened["id"])
    upload_id = resume
    if on_open is not None:
        on_open(upload_id)
    have = api.received(upload_id)
    total = sum(f.size for f in files)
    done: dict[str, int] = {}
    for file in files:

        def report(offset: int, name: str = file.name) -> None:
            done[name] = offset
            if progress is not None:
                progress(name, sum(done.values()), total)

        send_file(api, upload_id, file, have=have, chunk=chunk_size, progress=report)
    answer: dict[str, Any] = api.retrying(
        "processing the upload", lambda: api.call("POST", f"/api/v1/uploads/{upload_id}/complete")
    )
    return answer
