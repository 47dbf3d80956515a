"""Errors of the viewer API: JSON bodies carry `detail`, the message a person can act on."""

from __future__ import annotations

from typing import Any

from voxelhub.core.errors import VoxelhubError


class ViewerError(VoxelhubError):
    code = "viewer_error"

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "detail": self.message, **self.detail}


class InvalidParameter(ViewerError):
    status_code = 400
    code = "invalid_parameter"


class SeriesNotVisible(ViewerError):
    status_code = 404
    code = "not_found"


class NotRenderable(ViewerError):
    """The request is well formed but the series cannot answer it (yet)."""

    status_code = 409
    code = "not_renderable"


class UndecodableImage(ViewerError):
    """A stored frame that cannot be decoded: the data is damaged, not the request."""

    status_code = 422
    code = "undecodable_image"
