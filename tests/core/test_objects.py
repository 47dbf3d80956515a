"""The object store: every contract test runs on the local backend and on a real SeaweedFS."""

from __future__ import annotations

import io
import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.fixtures.seaweed import SeaweedS3
from voxelhub.core import security
from voxelhub.core.errors import BadRequest, NotFound
from voxelhub.core.objects import (
    InvalidArgument,
    InvalidKey,
    InvalidRange,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    open_store,
)
from voxelhub.core.settings import Settings

SECRET = "objects-test-secret-" + "x" * 40
MiB = 1 << 20


def _s3_store(server: SeaweedS3, *, bucket: str | None = None, **kwargs: Any) -> S3ObjectStore:
    options: dict[str, Any] = {
        "endpoint": server.endpoint,
        "bucket": bucket or f"t-{uuid.uuid4().hex[:20]}",
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
    }
    options.update(kwargs)
    return S3ObjectStore(**options)


def _drop_bucket(store: S3ObjectStore) -> None:
    keys = [info.key for info in store.list()]
    for start in range(0, len(keys), 1000):
        objects: Any = [{"Key": key} for key in keys[start : start + 1000]]
        store.client.delete_objects(Bucket=store.bucket, Delete={"Objects": objects})
    store.client.delete_bucket(Bucket=store.bucket)


@pytest.fixture
def s3_store(seaweed_s3: SeaweedS3) -> Iterator[S3ObjectStore]:
    """An S3 store on its own fresh bucket; lists come in pages of 3 to exercise paging."""
    store = _s3_store(seaweed_s3, list_page_size=3)
    yield store
    _drop_bucket(store)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", secret_key=SECRET)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each backend in turn, empty."""
    name = "local_store" if request.param == "local" else "s3_store"
    backend: ObjectStore = request.getfixturevalue(name)
    return backend


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class _RecordingReader(io.RawIOBase):
    """A binary file object that records each read() size; `delay` is seconds per MiB read."""

    def __init__(self, data: bytes, *, delay: float = 0.0, fail_after: int | None = None):
        self._buffer = io.BytesIO(data)
        self._delay = delay
        self._fail_after = fail_after
        self.requests: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.requests.append(size)
        if self._fail_after is not None and self._buffer.tell() >= self._fail_after:
            raise OSError("the upload source broke")
        chunk = self._buffer.read(size)
        time.sleep(self._delay * len(chunk) / MiB)
        return chunk

    def readinto(self, target: Any) -> int:
        chunk = self.read(len(target))
        target[: len(chunk)] = chunk
        return len(chunk)


# --- the contract, on both backends -------------------------------------------------------


def test_store_follows_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_round_trip(store: ObjectStore) -> None:
    data = _data(1000)
    before = datetime.now(UTC) - timedelta(seconds=5)

    info = store.put("studies/1.2.3/0001.dcm", data, content_type="application/dicom")

    assert info.key == "studies/1.2.3/0001.dcm"
    assert info.size == 1000
    assert info.content_type == "application/dicom"
    assert info.last_modified.tzinfo is not None
    assert before <= info.last_modified <= datetime.now(UTC) + timedelta(seconds=5)
    assert store.get("studies/1.2.3/0001.dcm") == data
    assert store.stat("studies/1.2.3/0001.dcm") == info
    assert store.exists("studies/1.2.3/0001.dcm")


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a/report.json", "application/json"), ("a/blob", "application/octet-stream")],
)
def test_put_guesses_the_content_type_from_the_key(
    store: ObjectStore, key: str, expected: str
) -> None:
    assert store.put(key, b"{}").content_type == expected
    assert store.stat(key).content_type == expected


def test_put_replaces_and_changes_the_etag(store: ObjectStore) -> None:
    first = store.put("k", b"one")
    second = store.put("k", b"second version")

    assert store.get("k") == b"second version"
    assert second.size == 14
    assert second.etag != first.etag


def test_put_empty_object(store: ObjectStore) -> None:
    assert store.put("empty", b"").size == 0
    assert store.get("empty") == b""
    assert list(store.stream("empty")) in ([], [b""])
    assert store.get_range("empty", 0) == b""


def test_streaming_put_reads_the_file_in_chunks(store: ObjectStore) -> None:
    data = _data(10 * MiB + 123)
    reader = _RecordingReader(data)

    info = store.put("big/volume.nii", reader)  # type: ignore[arg-type]

    assert info.size == len(data)
    assert all(0 < size <= 8 * MiB for size in reader.requests), reader.requests
    chunks = list(store.stream("big/volume.nii", chunk_size=MiB))
    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= MiB
    assert b"".join(chunks) == data


def test_put_from_a_real_file(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(_data(3 * MiB, seed=1))

    with path.open("rb") as fh:
        store.put("uploads/file.bin", fh)

    assert store.get("uploads/file.bin") == path.read_bytes()


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (2, 5, slice(2, 5)),
        (3, None, slice(3, None)),
        (0, 10_000, slice(0, None)),
        (95, 200, slice(95, None)),
        (100, None, slice(100, None)),
        (4, 4, slice(4, 4)),
    ],
)
def test_get_range(store: ObjectStore, start: int, end: int | None, expected: slice) -> None:
    data = _data(100)
    store.put("r", data)

    assert store.get_range("r", start, end) == data[expected]


@pytest.mark.parametrize(("start", "end"), [(101, None), (500, 600), (-1, None), (5, 3)])
def test_get_range_outside_the_object_is_refused(
    store: ObjectStore, start: int, end: int | None
) -> None:
    store.put("r", _data(100))

    with pytest.raises(InvalidRange) as caught:
        store.get_range("r", start, end)

    assert isinstance(caught.value, BadRequest)
    assert "'r'" in caught.value.message


def test_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    for read in (store.get, store.stat, store.stream, lambda key: store.get_range(key, 0, 1)):
        with pytest.raises(ObjectNotFound) as caught:
            read("no/such/key")
        assert caught.value.status_code == 404
        assert isinstance(caught.value, NotFound)
        assert "'no/such/key'" in caught.value.message
    assert not store.exists("no/such/key")
    store.delete("no/such/key")


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a/../b", "..", "a\\b", "a\x00b", "a//b", "a/", "./a", "a/.tmp-x", "x" * 1025],
)
def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.stat(key),
        lambda: store.delete(key),
        lambda: store.signed_url(key, expires_in=60),
    ):
        with pytest.raises(InvalidKey) as caught:
            call()
        assert caught.value.status_code == 400


@pytest.mark.parametrize("prefix", ["/", "../", "a/../", "a\\"])
def test_invalid_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        list(store.list(prefix))


KEYS = ["a-b", "a.txt", "a/b", "a/c/d", "a/c/e", "ab", "b/x", "zz/y/z"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", KEYS),
        ("a/", ["a/b", "a/c/d", "a/c/e"]),
        ("a", ["a-b", "a.txt", "a/b", "a/c/d", "a/c/e", "ab"]),
        ("a/c", ["a/c/d", "a/c/e"]),
        ("a/c/", ["a/c/d", "a/c/e"]),
        ("zz/y/z", ["zz/y/z"]),
        ("b/x/", []),
        ("nothing", []),
    ],
)
def test_list_is_recursive_sorted_and_filtered(
    store: ObjectStore, prefix: str, expected: list[str]
) -> None:
    for key in reversed(KEYS):
        store.put(key, key.encode())

    listed = list(store.list(prefix))

    assert [info.key for info in listed] == expected
    for info in listed:
        assert info.size == len(info.key)
        assert info.content_type is None
        assert info.etag == store.stat(info.key).etag


def test_delete(store: ObjectStore) -> None:
    store.put("a/b", b"1")
    store.put("a/c", b"2")

    store.delete("a/b")

    assert not store.exists("a/b")
    assert [info.key for info in store.list()] == ["a/c"]


def test_delete_prefix(store: ObjectStore) -> None:
    for key in ["s/1/a", "s/1/b", "s/1/c/d", "s/10", "s/2/a"]:
        store.put(key, b"x")

    assert store.delete_prefix("s/1/") == 3
    assert [info.key for info in store.list()] == ["s/10", "s/2/a"]
    assert store.delete_prefix("s/1/") == 0
    with pytest.raises(InvalidKey):
        store.delete_prefix("")


@pytest.mark.parametrize("preexisting", [True, False])
def test_readers_never_see_a_partial_object(store: ObjectStore, preexisting: bool) -> None:
    old = b"o" * MiB
    new = _data(16 * MiB, seed=2)
    if preexisting:
        store.put("atomic", old)
    slow = _RecordingReader(new, delay=0.03)
    writer = threading.Thread(target=store.put, args=("atomic", slow))
    seen: set[str] = set()

    writer.start()
    while writer.is_alive():
        try:
            content = store.get("atomic")
        except ObjectNotFound:
            seen.add("nothing")
        else:
            assert content in (old, new), f"a reader saw {len(content)} bytes"
            seen.add("old" if content == old else "new")
        assert {info.key for info in store.list()} <= {"atomic"}
    writer.join()

    assert seen & {"old", "nothing"}, "the put finished before any read; slow it down"
    assert store.get("atomic") == new


def test_a_failed_put_keeps_the_old_object(store: ObjectStore) -> None:
    store.put("keep", b"old")

    with pytest.raises(OSError, match="upload source broke") as caught:
        store.put("keep", _RecordingReader(_data(12 * MiB), fail_after=MiB))  # type: ignore[arg-type]

    assert not isinstance(caught.value, ObjectStoreError)
    assert store.get("keep") == b"old"
    assert [info.key for info in store.list()] == ["keep"]


@pytest.mark.parametrize("expires_in", [0, -5, 8 * 24 * 3600])
def test_signed_url_lifetime_is_bounded(store: ObjectStore, expires_in: int) -> None:
    with pytest.raises(InvalidArgument):
        store.signed_url("k", expires_in=expires_in)


def test_check_passes_on_a_working_store(store: ObjectStore) -> None:
    store.check()


# --- S3 (SeaweedFS) -----------------------------------------------------------------------


def _fetch(url: str) -> tuple[int, bytes, str | None]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Disposition")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), None


@pytest.mark.slow
def test_s3_signed_url_downloads_the_object(s3_store: S3ObjectStore) -> None:
    s3_store.put("reports/1.pdf", b"%PDF-1.7 report")

    status, body, disposition = _fetch(s3_store.signed_url("reports/1.pdf", expires_in=60))
    assert (status, body) == (200, b"%PDF-1.7 report")

    url = s3_store.signed_url("reports/1.pdf", expires_in=60, filename="Report 1 (é).pdf")
    status, body, disposition = _fetch(url)
    assert status == 200
    assert disposition is not None
    assert 'filename="Report 1 (_).pdf"' in disposition
    assert "filename*=UTF-8''Report%201%20%28%C3%A9%29.pdf" in disposition


@pytest.mark.slow
def test_s3_tampered_signed_url_is_refused(s3_store: S3ObjectStore) -> None:
    s3_store.put("a", b"secret pixels")
    s3_store.put("b", b"other pixels")
    url = s3_store.signed_url("a", expires_in=60)

    assert _fetch(url.replace("Signature=", "Signature=0"))[0] == 403
    assert _fetch(url.replace(f"/{s3_store.bucket}/a?", f"/{s3_store.bucket}/b?"))[0] == 403


@pytest.mark.slow
def test_s3_expired_signed_url_is_refused(s3_store: S3ObjectStore) -> None:
    s3_store.put("a", b"pixels")
    url = s3_store.signed_url("a", expires_in=1)

    time.sleep(2.2)

    assert _fetch(url)[0] == 403


@pytest.mark.slow
def test_seaweedfs_verifies_signatures(seaweed_s3: SeaweedS3, s3_store: S3ObjectStore) -> None:
    s3_store.put("a", b"pixels")
    wrong = boto3.session.Session().client(
        "s3",
        endpoint_url=seaweed_s3.endpoint,
        aws_access_key_id=seaweed_s3.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=seaweed_s3.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    with pytest.raises(ClientError) as caught:
        wrong.get_object(Bucket=s3_store.bucket, Key="a")

    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


@pytest.mark.slow
def test_s3_wrong_secret_is_reported_with_what_to_check(seaweed_s3: SeaweedS3) -> None:
    store = _s3_store(seaweed_s3, secret_key="not-the-secret")

    with pytest.raises(ObjectStoreError) as caught:
        store.put("a", b"x")

    assert "VOXELHUB_S3_SECRET_KEY" in caught.value.message
    assert seaweed_s3.endpoint in caught.value.message


def test_s3_unreachable_endpoint_is_reported_with_what_to_check() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = S3ObjectStore(
        endpoint=endpoint, bucket="nothing", access_key="a", secret_key="b", region="us-east-1"
    )

    with pytest.raises(ObjectStoreError) as caught:
        store.check()

    assert endpoint in caught.value.message
    assert "VOXELHUB_S3_ENDPOINT" in caught.value.message
    assert not isinstance(caught.value, ObjectNotFound)


@pytest.mark.slow
def test_s3_creates_its_bucket_on_first_use(seaweed_s3: SeaweedS3) -> None:
    store = _s3_store(seaweed_s3)
    try:
        assert not store.exists("anything")
        store.client.head_bucket(Bucket=store.bucket)
        store.check()
    finally:
        _drop_bucket(store)


@pytest.mark.slow
def test_s3_list_follows_pages(seaweed_s3: SeaweedS3) -> None:
    store = _s3_store(seaweed_s3, list_page_size=2)
    calls: list[str] = []
    store.client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda **_: calls.append("page")
    )
    try:
        keys = [f"p/{index:02d}" for index in range(7)]
        for key in reversed(keys):
            store.put(key, b"x")

        assert [info.key for info in store.list("p/")] == keys
        assert len(calls) == 4
        assert store.delete_prefix("p/") == 7
    finally:
        _drop_bucket(store)


# --- local ----------------------------------------------------------------------------------


def _query(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return unquote(parts.path), {name: values[0] for name, values in parse_qs(parts.query).items()}


def test_local_signed_url_verifies(local_store: LocalObjectStore) -> None:
    url = local_store.signed_url("studies/a b/1.dcm", expires_in=60, filename="scan.dcm")

    path, query = _query(url)
    assert path == "/objects/studies/a b/1.dcm"
    assert url.startswith("/objects/studies/a%20b/1.dcm?")
    assert query["filename"] == "scan.dcm"
    expires_at = int(query["expires"])
    assert time.time() + 50 < expires_at <= time.time() + 61
    assert local_store.verify_signed("studies/a b/1.dcm", expires_at, query["sig"])


def test_local_signed_url_rejects_tampering(local_store: LocalObjectStore) -> None:
    _, query = _query(local_store.signed_url("a/1.dcm", expires_in=60))
    expires_at, sig = int(query["expires"]), query["sig"]

    assert not local_store.verify_signed("a/2.dcm", expires_at, sig)
    assert not local_store.verify_signed("a/1.dcm", expires_at + 3600, sig)
    assert not local_store.verify_signed("a/1.dcm", expires_at, sig[:-2] + "AA")
    assert not local_store.verify_signed("../a/1.dcm", expires_at, sig)
    other = LocalObjectStore(local_store.root, secret_key="another-" + "y" * 40)
    assert not other.verify_signed("a/1.dcm", expires_at, sig)


def test_local_signed_url_expires(local_store: LocalObjectStore) -> None:
    past = int(time.time()) - 1
    signature = security.sign_path(SECRET, "/objects/a/1.dcm", expires_at=past)

    assert not local_store.verify_signed("a/1.dcm", past, signature)


def test_local_path_of(local_store: LocalObjectStore) -> None:
    local_store.put("a/b.dcm", b"x")

    assert local_store.path_of("a/b.dcm") == local_store.root / "a" / "b.dcm"
    assert local_store.path_of("a/b.dcm").read_bytes() == b"x"


def test_local_writes_leave_no_temp_files_and_prune_empty_dirs(
    local_store: LocalObjectStore,
) -> None:
    local_store.put("deep/er/still/k", b"x")
    local_store.put("deep/other", b"y")
    assert not [p for p in local_store.root.rglob("*") if p.name.startswith(".tmp-")]

    local_store.delete("deep/er/still/k")

    assert not (local_store.root / "deep" / "er").exists()
    assert (local_store.root / "deep" / "other").exists()


def test_local_sweep_removes_only_old_temp_files(local_store: LocalObjectStore) -> None:
    local_store.put("a/k", b"x")
    stale = local_store.root / "a" / ".tmp-crashed"
    fresh = local_store.root / "a" / ".tmp-writing"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))

    assert [info.key for info in local_store.list()] == ["a/k"]
    assert local_store.sweep_temp(older_than_seconds=600) == 1

    assert not stale.exists()
    assert fresh.exists()


def _folder_with_a_secret(folder: Path) -> Path:
    folder.mkdir()
    (folder / "secret").write_bytes(b"not yours")
    return folder


def test_local_list_and_reads_stay_inside_the_root(
    local_store: LocalObjectStore, tmp_path: Path
) -> None:
    outside = _folder_with_a_secret(tmp_path / "outside")
    local_store.put("a/k", b"x")
    (local_store.root / "link").symlink_to(outside)
    (local_store.root / "a" / "file-link").symlink_to(outside / "secret")

    assert [info.key for info in local_store.list()] == ["a/k"]
    assert list(local_store.list("link/")) == []
    with pytest.raises(InvalidKey):
        local_store.get("link/secret")
    with pytest.raises(InvalidKey):
        local_store.get("a/file-link")


def test_a_link_in_a_folder_already_checked_still_leads_nowhere(
    local_store: LocalObjectStore, tmp_path: Path
) -> None:
    outside = _folder_with_a_secret(tmp_path / "elsewhere")
    local_store.put("sets/one/k", b"x")  # sets/ and sets/one/ are now known inside
    local_store.put("sets/two/k", b"y")  # a new real folder beside it
    (local_store.root / "sets" / "three").symlink_to(outside)

    with pytest.raises(InvalidKey, match="through a link"):
        local_store.get("sets/three/secret")
    with pytest.raises(InvalidKey, match="through a link"):
        local_store.put("sets/three/new", b"z")
    assert not (outside / "new").exists()
    assert [info.key for info in local_store.list("sets/")] == ["sets/one/k", "sets/two/k"]


def test_local_key_cannot_be_both_object_and_folder(local_store: LocalObjectStore) -> None:
    local_store.put("a/b", b"x")

    with pytest.raises(InvalidKey, match="folder"):
        local_store.put("a/b/c", b"y")
    with pytest.raises(InvalidKey, match="folder"):
        local_store.put("a", b"y")
    assert local_store.get("a/b") == b"x"


def test_local_check_reports_an_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = LocalObjectStore(blocker / "objects", secret_key=SECRET)

    with pytest.raises(ObjectStoreError) as caught:
        store.check()

    assert str(blocker) in caught.value.message


def test_local_keeps_content_type(local_store: LocalObjectStore) -> None:
    local_store.put("x.bin", b"x", content_type="application/dicom")

    assert LocalObjectStore(local_store.root, secret_key=SECRET).stat("x.bin").content_type == (
        "application/dicom"
    )


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_local_objects_not_yet_durable_are_synced_and_their_files_closed(
    local_store: LocalObjectStore,
) -> None:
    """Past the most descriptors kept open, files are synced by path; an object written
    twice before the sync leaves neither descriptor open."""
    before = _open_fds()
    count = 300
    for index in range(count):
        local_store.put(f"batch/{index % 7}/{index}", _data(100, index), durable=False)
    local_store.put("batch/0/0", b"again", durable=False)
    assert _open_fds() > before
    local_store.sync()

    assert _open_fds() == before
    assert local_store.get("batch/0/0") == b"again"
    assert all(local_store.get(f"batch/{i % 7}/{i}") == _data(100, i) for i in range(1, count))
    local_store.sync()  # nothing left to do
    assert _open_fds() == before


# --- open_store -----------------------------------------------------------------------------


@pytest.fixture
def no_s3_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VOXELHUB_S3_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_s3_environment")
def test_open_store_defaults_to_local(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, secret_key=SECRET)

    store = open_store(settings)

    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "objects"


@pytest.mark.usefixtures("no_s3_environment")
def test_open_store_uses_s3_when_configured(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        secret_key=SECRET,
        s3_endpoint="http://127.0.0.1:9",
        s3_bucket="voxelhub",
        s3_access_key="key",
        s3_secret_key="secret",
    )

    store = open_store(settings)

    assert isinstance(store, S3ObjectStore)
    assert (store.endpoint, store.bucket) == ("http://127.0.0.1:9", "voxelhub")


def test_local_disk_errors_are_reported_with_what_to_check(
    local_store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)

    with pytest.raises(ObjectStoreError, match="free disk space"):
        local_store.put("k", b"x")
    monkeypatch.undo()
    assert not local_store.exists("k")
    assert not [p for p in local_store.root.rglob("*") if p.is_file()]


def test_local_text_mode_file_is_refused(local_store: LocalObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("text")

    with path.open() as fh, pytest.raises(InvalidArgument, match="binary mode"):
        local_store.put("notes.txt", fh)  # type: ignore[arg-type]
