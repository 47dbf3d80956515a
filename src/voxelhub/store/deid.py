"""Applying an archive's de-identification policy to instances on their way in."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.archives.models import Archive
from voxelhub.core.settings import Settings
from voxelhub.dicom.deid_policy import load_stored
from voxelhub.dicom.deidentify import DeidPolicy, DeidReport, deidentify_bytes

logger = logging.getLogger(__name__)

Prepare = Callable[[bytes], tuple[bytes, DeidReport | None]]
_ITEM_INDEX = re.compile(r"\[\d+\]")
# Warnings about stored policies already logged by this process: once each, not per request.
_warned: set[tuple[uuid.UUID, str]] = set()
_warned_lock = threading.Lock()


def deid_key(settings: Settings, archive_id: uuid.UUID) -> bytes:
    """The archive's de-identification key: UIDs, pseudonyms and date shifts are keyed on it.

    The same original UID always maps to the same new one, and one patient's dates always
    move by the same number of days, in this archive and no other.
    """
    return hmac.new(settings.key().encode(), b"deid:" + archive_id.bytes, hashlib.sha256).digest()


def policy_of(db: Session, archive_id: uuid.UUID) -> DeidPolicy | None:
    """The archive's policy (None: none), loaded as `load_stored` loads an old one.

    What loading had to change is logged as a warning, once per archive and process.
    """
    stored = db.scalar(select(Archive.deid_policy).where(Archive.id == archive_id))
    if stored is None:
        return None
    loaded = load_stored(stored)
    for warning in loaded.warnings:
        with _warned_lock:
            new = (archive_id, warning) not in _warned
            _warned.add((archive_id, warning))
        if new:
            logger.warning("archive %s: %s", archive_id, warning)
    return loaded.policy


def preparer(policy: DeidPolicy | None, key: bytes) -> Prepare | None:
    """What to run on each incoming instance's bytes (None: store them as they come)."""
    if policy is None:
        return None

    def prepare(data: bytes) -> tuple[bytes, DeidReport | None]:
        return deidentify_bytes(data, policy, key=key)

    return prepare


def preparer_for(db: Session, settings: Settings, archive_id: uuid.UUID) -> Prepare | None:
    return preparer(policy_of(db, archive_id), deid_key(settings, archive_id))


@dataclass
class DeidSummary:
    """What de-identification changed across a request, for its audit record."""

    instances: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    def add(self, report: DeidReport | None) -> None:
        if report is None:
            return
        self.instances += 1
        for change in report.changes:
            # Items counted together, but the attribute is named: "SourceImageSequence:X"
            # would read as the sequence removed when only an attribute in it was.
            attribute = _ITEM_INDEX.sub("[]", change.attribute)
            self.actions[f"{attribute}:{change.action}"] += 1

    def to_json(self) -> dict[str, Any]:
        return {"instances": self.instances, "changes": dict(self.actions.most_common(200))}


class CachedPreparer:
    """A preparer looked up at most every few seconds (for long-lived DIMSE services)."""

    def __init__(self, lookup: Callable[[], Prepare | None], ttl_seconds: float = 5.0) -> None:
        self._lookup, self._ttl = lookup, ttl_seconds
        self._value: Prepare | None = None
        self._at = float("-inf")

    def get(self) -> Prepare | None:
        now = time.monotonic()
        if now - self._at > self._ttl:
            self._value, self._at = self._lookup(), now
        return self._value
