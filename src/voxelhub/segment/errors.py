"""The one error of the segmentation package: what went wrong and how to fix it."""

from __future__ import annotations


class SegmentError(Exception):
    """A segmentation input, model or configuration that cannot be used, said for people.

    `source` names the file, key or input the message is about, when there is one.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message
