"""Read access to the top-level elements of a dataset by keyword.

Validation, the index keys and the pixel layout read a few dozen attributes of each
instance. A pydicom `Dataset` answers each through `__getattr__`, `Tag()` and tag
comparisons written in Python; the elements of a plain file as `fastsplit` reads them
answer from a dict by tag, several times faster. Both are read through this protocol,
and both answer as a `Dataset` does.
"""

from __future__ import annotations

from typing import Any, Protocol


class Element(Protocol):
    """The parts of a data element the checks read."""

    @property
    def value(self) -> Any: ...

    @property
    def is_undefined_length(self) -> bool: ...


class Attributes(Protocol):
    """Top-level elements by keyword, with `Dataset`'s answers (`file_meta` by attribute)."""

    def get(self, keyword: str, default: Any = None, /) -> Any: ...

    def __contains__(self, keyword: str, /) -> bool: ...

    def __getitem__(self, keyword: str, /) -> Element: ...

    def __getattr__(self, keyword: str, /) -> Any: ...
