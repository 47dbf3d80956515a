"""Loaded models kept warm: least recently used ones are evicted under a memory budget."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    model: Any
    size_mb: float


class ModelCache:
    """A thread-safe LRU of loaded models.

    `dispose(model)` is called (outside the cache's lock) for every model that leaves the
    cache, evicted or forgotten: a model that is a process of its own is stopped there.

    >>> cache = ModelCache(budget_mb=100)
    >>> cache.get("a", lambda: ("model a", 60.0))
    'model a'
    >>> cache.get("b", lambda: ("model b", 60.0))  # evicts "a": 120 MB > 100 MB
    'model b'
    >>> cache.keys()
    ['b']
    """

    def __init__(self, budget_mb: float, *, dispose: Callable[[Any], None] | None = None) -> None:
        self.budget_mb = budget_mb
        self.dispose = dispose
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0
        self.evictions = 0

    def get(self, key: str, load: Callable[[], tuple[Any, float]]) -> Any:
        """The model under `key`, loading it (once, even under concurrent calls) if needed."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry.model
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    return entry.model
            model, size_mb = load()
            with self._lock:
                self._entries[key] = _Entry(model, size_mb)
                self.loads += 1
                evicted = self._evict(keep=key)
                self._loading.pop(key, None)
        self._dispose(evicted)
        return model

    def resize(self, key: str, size_mb: float) -> None:
        """Record what the model under `key` takes now (it grows as it runs); evicts others."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.size_mb = size_mb
            evicted = self._evict(keep=key)
        self._dispose(evicted)

    def _evict(self, *, keep: str) -> list[Any]:
        evicted = []
        while self.used_mb() > self.budget_mb and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            if oldest == keep:
                self._entries.move_to_end(oldest)
                oldest = next(iter(self._entries))
            evicted.append(self._entries.pop(oldest).model)
            self.evictions += 1
        return evicted

    def _dispose(self, models: list[Any]) -> None:
        if self.dispose is None:
            return
        for model in models:
            try:
                self.dispose(model)
            except Exception:
                logger.warning("could not release an evicted model", exc_info=True)

    def used_mb(self) -> float:
        return sum(e.size_mb for e in self._entries.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def sizes(self) -> dict[str, float]:
        """The memory (MB) each loaded model takes, least recently used first."""
        with self._lock:
            return {key: entry.size_mb for key, entry in self._entries.items()}

    def forget(self, key: str) -> None:
        with self._lock:
            entry = self._entries.pop(key, None)
        self._dispose([] if entry is None else [entry.model])

    def clear(self) -> None:
        """Release every loaded model (on shutdown)."""
        with self._lock:
            models = [entry.model for entry in self._entries.values()]
            self._entries.clear()
        self._dispose(models)
