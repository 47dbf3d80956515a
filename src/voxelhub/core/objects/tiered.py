"""One key prefix kept on another object store: the raw-data tier.

Raw MRI k-space is large, rarely read and kept for years, so a site may want it on cheaper
storage than the pixels viewers read every second: another disk, another bucket, or an S3
storage class such as STANDARD_IA or GLACIER_IR. `TieredObjectStore` routes every key under
one prefix to that second store and everything else to the main one; callers see one store
with unchanged keys, so the database keeps the same keys whichever tier holds the bytes.

Objects written under the prefix before the tier was configured stay in the main store and
stay readable: reads that miss in the tier look in the main store, and deletes remove the key
from both.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from voxelhub.core.objects.base import DEFAULT_CHUNK_SIZE, ObjectInfo, ObjectNotFound, ObjectStore
from voxelhub.core.objects.keys import validate_key, validate_prefix

T = TypeVar("T")


class TieredObjectStore:
    """`main` for every key except those under `prefix + '/'`, which live on `tier`."""

    def __init__(self, main: ObjectStore, *, prefix: str, tier: ObjectStore) -> None:
        validate_key(prefix)
        self.main = main
        self.tier = tier
        self.prefix = prefix.rstrip("/") + "/"

    def __repr__(self) -> str:
        return f"TieredObjectStore(main={self.main!r}, {self.prefix!r} -> {self.tier!r})"

    @property
    def puts_in_parallel(self) -> bool:
        return self.main.puts_in_parallel or self.tier.puts_in_parallel

    def _tiered(self, key: str) -> bool:
        return validate_key(key).startswith(self.prefix)

    def _owner(self, key: str) -> ObjectStore:
        """Where `key` is written."""
        return self.tier if self._tiered(key) else self.main

    def holder(self, key: str) -> ObjectStore:
        """The store that holds `key` (for a missing key, where it would be written)."""
        owner = self._owner(key)
        if owner is self.tier and not self.tier.exists(key) and self.main.exists(key):
            return self.main  # written before the tier was configured
        return owner

    def _read(self, key: str, call: Callable[[ObjectStore], T]) -> T:
        """`call` on the store holding `key`: the tier, else the main store for objects
        written there before the tier was configured."""
        if not self._tiered(key):
            return call(self.main)
        try:
            return call(self.tier)
        except ObjectNotFound:
            return call(self.main)

    def _lists_tier(self, prefix: str) -> bool:
        """Whether a listing of `prefix` can hold keys of the tier."""
        validate_prefix(prefix)
        return prefix.startswith(self.prefix) or self.prefix.startswith(prefix)

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str | None = None,
        durable: bool = True,
    ) -> ObjectInfo:
        return self._owner(key).put(key, data, content_type=content_type, durable=durable)

    def sync(self) -> None:
        self.main.sync()
        self.tier.sync()

    def get(self, key: str) -> bytes:
        return self._read(key, lambda store: store.get(key))

    def stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        return self._read(key, lambda store: store.stream(key, chunk_size=chunk_size))

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        return self._read(key, lambda store: store.get_range(key, start, end))

    def stat(self, key: str) -> ObjectInfo:
        return self._read(key, lambda store: store.stat(key))

    def exists(self, key: str) -> bool:
        if self._tiered(key):
            return self.tier.exists(key) or self.main.exists(key)
        return self.main.exists(key)

    def delete(self, key: str) -> None:
        if self._tiered(key):
            self.tier.delete(key)
        self.main.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        tiered = self.tier.delete_prefix(prefix) if self._lists_tier(prefix) else 0
        return tiered + self.main.delete_prefix(prefix)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self._lists_tier(prefix):
            yield from self.main.list(prefix)
            return
        tier_keys = (info for info in self.tier.list(prefix) if info.key.startswith(self.prefix))
        merged = heapq.merge(tier_keys, self.main.list(prefix), key=lambda info: info.key)
        previous: str | None = None
        for info in merged:  # a key in both (tier first, as merge is stable) is listed once
            if info.key != previous:
                yield info
            previous = info.key

    def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        return self.holder(key).signed_url(key, expires_in=expires_in, filename=filename)

    def check(self) -> None:
        self.main.check()
        self.tier.check()
