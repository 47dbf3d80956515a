"""The object store on an S3-compatible server: AWS S3, SeaweedFS, MinIO.

Requests are signed with signature v4 and use path-style addressing, which every
S3-compatible server understands. The bucket is created on first use. Errors are
translated: a missing key becomes ObjectNotFound, an unreachable server or refused
credentials an ObjectStoreError that names the endpoint and what to check.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from voxelhub.core.objects.base import (
    DEFAULT_CHUNK_SIZE,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
)
from voxelhub.core.objects.keys import (
    content_disposition,
    content_type_for,
    validate_expires_in,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import ObjectTypeDef

logger = logging.getLogger(__name__)

_MULTIPART_BYTES = 8 << 20
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_REFUSED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
_BUCKET_TAKEN_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


class S3ObjectStore:
    """Objects in one bucket of an S3-compatible server; thread-safe like its boto3 client."""

    puts_in_parallel = True

    def __init__(
        self,
        *,
        endpoint: str | None,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str,
        list_page_size: int = 1000,
        storage_class: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        # Every object written goes to this S3 storage class (e.g. STANDARD_IA); None = the
        # bucket's default.
        self.storage_class = storage_class
        self.bucket = bucket
        self.region = region
        self._page_size = list_page_size
        self._bucket_ready = False
        self._lock = threading.Lock()
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_BYTES,
            multipart_chunksize=_MULTIPART_BYTES,
            max_concurrency=4,
        )
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
            # Servers other than AWS do not all accept the newer default checksum trailers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3ObjectStore(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; raises ObjectStoreError when S3 refuses."""
        with self._errors("check the bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as err:
                if _code(err) not in _NOT_FOUND_CODES | _MISSING_BUCKET_CODES:
                    raise
                self._create_bucket()
        self._bucket_ready = True

    def sync(self) -> None:
        """S3 acknowledges a PUT only once the object is durable: nothing to do."""

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str | None = None,
        durable: bool = True,
    ) -> ObjectInfo:
        """Store `data` under `key`; file objects are uploaded in parts of 8 MiB."""
        validate_key(key)
        resolved_type = content_type_for(key, content_type)
        client = self._ready_client()
        with self._errors(f"store {key!r}"):
            extra: dict[str, Any] = {"ContentType": resolved_type}
            if self.storage_class is not None:
                extra["StorageClass"] = self.storage_class
            if isinstance(data, bytes | bytearray | memoryview):
                client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), **extra)
            else:
                client.upload_fileobj(
                    data, self.bucket, key, ExtraArgs=extra, Config=self._transfer
                )
        return self.stat(key)

    def get(self, key: str) -> bytes:
        """The whole content of the object."""
        body = self._get_body(key)
        with self._errors(f"read {key!r}", key=key), contextlib.closing(body):
            return body.read()

    def stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The content in chunks; the request (and a missing key) happens right away."""
        return self._chunks(key, self._get_body(key), chunk_size=chunk_size)

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes `start` up to (not including) `end`; None reads to the end of the object."""
        if start < 0 or (end is not None and end < start):
            raise InvalidRange(f"invalid byte range {start}-{end} for {key!r}")
        if end == start:
            self._check_start(key, start)
            return b""
        header = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            body = self._get_body(key, header)
        except InvalidRange:
            # S3 refuses a range that starts at the end; an empty read is fine there.
            self._check_start(key, start)
            return b""
        with self._errors(f"read {key!r}", key=key), contextlib.closing(body):
            return body.read()

    def stat(self, key: str) -> ObjectInfo:
        """Size, etag, time and content type of the object."""
        validate_key(key)
        client = self._ready_client()
        with self._errors(f"look up {key!r}", key=key):
            head = client.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=head["ContentLength"],
            etag=head["ETag"].strip('"'),
            last_modified=head["LastModified"],
            content_type=head.get("ContentType") or content_type_for(key, None),
        )

    def exists(self, key: str) -> bool:
        """True when an object is stored under `key`."""
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        validate_key(key)
        client = self._ready_client()
        with self._errors(f"delete {key!r}"):
            client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with the non-empty `prefix`; the count."""
        if not prefix:
            raise InvalidKey("delete_prefix() needs a non-empty prefix; it never empties a store")
        deleted = 0
        batch: list[str] = []
        for info in self.list(prefix):
            batch.append(info.key)
            if len(batch) == 1000:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, recursively, sorted by key."""
        validate_prefix(prefix)
        return self._list(self._ready_client(), prefix)

    def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A presigned GET URL; with `filename` the download is saved under that name."""
        validate_key(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        with self._errors(f"sign a URL for {key!r}"):
            return self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=validate_expires_in(expires_in)
            )

    def check(self) -> None:
        """Raise ObjectStoreError unless the server answers and the bucket is usable."""
        self.ensure_bucket()

    def _ready_client(self) -> S3Client:
        if not self._bucket_ready:
            with self._lock:
                if not self._bucket_ready:
                    self.ensure_bucket()
        return self.client

    def _create_bucket(self) -> None:
        logger.info("creating bucket %r at %s", self.bucket, self._where)
        try:
            if self.region == "us-east-1":
                self.client.create_bucket(Bucket=self.bucket)
            else:
                location = cast("BucketLocationConstraintType", self.region)
                self.client.create_bucket(
                    Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": location}
                )
        except ClientError as err:
            if _code(err) not in _BUCKET_TAKEN_CODES:
                raise

    def _get_body(self, key: str, byte_range: str | None = None) -> StreamingBody:
        validate_key(key)
        client = self._ready_client()
        with self._errors(f"read {key!r}", key=key):
            if byte_range is None:
                return client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)["Body"]

    def _chunks(self, key: str, body: StreamingBody, *, chunk_size: int) -> Iterator[bytes]:
        with self._errors(f"read {key!r}", key=key), contextlib.closing(body):
            yield from body.iter_chunks(chunk_size)

    def _check_start(self, key: str, start: int) -> None:
        size = self.stat(key).size
        if start > size:
            raise InvalidRange(f"range starts at byte {start} but {key!r} has only {size} bytes")

    def _list(self, client: S3Client, prefix: str) -> Iterator[ObjectInfo]:
        with self._errors(f"list {prefix!r}"):
            yield from self._walk(client, prefix)

    def _walk(self, client: S3Client, prefix: str) -> Iterator[ObjectInfo]:
        """Objects below `prefix` in key order, one '/'-level per listing.

        S3 promises keys in byte order, but SeaweedFS lists folder by folder ('a/b' before
        'a-b'). Listing a level with Delimiter='/' and sorting it, with sub-prefixes keeping
        their trailing '/', gives byte order on every server.
        """
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=prefix,
            Delimiter="/",
            PaginationConfig={"PageSize": self._page_size},
        )
        level: dict[str, ObjectInfo | None] = {}
        for page in pages:
            for item in page.get("Contents", []):
                # Keys ending in '/' are folder markers other S3 tools create, not objects.
                if not item["Key"].endswith("/"):
                    level[item["Key"]] = _info_from_listing(item)
            for common in page.get("CommonPrefixes", []):
                level.setdefault(common["Prefix"], None)
        for name in sorted(level):
            info = level[name]
            if info is None:
                yield from self._walk(client, name)
            else:
                yield info

    def _delete_batch(self, keys: Sequence[str]) -> int:
        client = self._ready_client()
        with self._errors(f"delete {len(keys)} objects"):
            result = client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )
        errors = result.get("Errors", [])
        if errors:
            first = errors[0]
            raise ObjectStoreError(
                f"S3 at {self._where} did not delete {len(errors)} of {len(keys)} objects, "
                f"e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )
        return len(keys)

    @property
    def _where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"

    @contextlib.contextmanager
    def _errors(self, action: str, *, key: str | None = None) -> Iterator[None]:
        """Translate boto3 errors raised while doing `action` into our errors."""
        try:
            yield
        except ClientError as err:
            raise self._client_error(err, action, key=key) from err
        except BotoConnectionError as err:
            raise ObjectStoreError(
                f"cannot reach S3 at {self._where} to {action} ({err}); check "
                "VOXELHUB_S3_ENDPOINT and that the S3 server is running and reachable from "
                "this machine"
            ) from err
        except (BotoCoreError, Boto3Error) as err:
            raise ObjectStoreError(f"S3 at {self._where} failed to {action}: {err}") from err

    def _client_error(self, err: ClientError, action: str, *, key: str | None) -> ObjectStoreError:
        code = _code(err)
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = err.response.get("Error", {}).get("Message", "")
        if key is not None and code in _NOT_FOUND_CODES:
            return ObjectNotFound(key)
        if code == "InvalidRange" or status == 416:
            return InvalidRange(f"the byte range lies outside {key!r}")
        if code in _MISSING_BUCKET_CODES:
            self._bucket_ready = False
            return ObjectStoreError(
                f"bucket {self.bucket!r} does not exist at {self._where}; it is created on "
                "first use, so it was probably deleted while voxelhub was running"
            )
        if code in _REFUSED_CODES or status == 403:
            return ObjectStoreError(
                f"S3 at {self._where} refused to {action} in bucket {self.bucket!r} ({code}); "
                "check VOXELHUB_S3_ACCESS_KEY and VOXELHUB_S3_SECRET_KEY and that this key "
                "may use the bucket"
            )
        return ObjectStoreError(f"S3 at {self._where} failed to {action}: {code} {message}")


def _info_from_listing(item: ObjectTypeDef) -> ObjectInfo:
    return ObjectInfo(
        key=item["Key"],
        size=item["Size"],
        etag=item["ETag"].strip('"'),
        last_modified=item["LastModified"],
        content_type=None,
    )


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))
