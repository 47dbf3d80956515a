"""HTTP methods the whole application honours: HEAD wherever GET is served, and a 405
whose `Allow` names every method of the resource (RFC 9110 §9.3.2, §15.5.6)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _HeadAnswered(Exception):
    """Raised into a streaming body that a HEAD request needs no more of."""


class HeadAsGet:
    """Answers HEAD as the same GET would, without the body.

    The request goes on as a GET, so every GET route serves HEAD with the same status and
    headers (Content-Length included). Of a streaming body no more than the first piece is
    made: the response is stopped there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = False

        async def headers_only(message: Message) -> None:
            nonlocal answered
            if message["type"] != "http.response.body":
                await send(message)
                return
            if not answered:
                answered = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if message.get("more_body", False):
                raise _HeadAnswered

        try:
            await self.app({**scope, "method": "GET"}, receive, headers_only)
        except _HeadAnswered:
            if not answered:
                raise


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path, for `Allow` (HEAD with GET).

    Each method is tried against the routes, as included routers nest routes of their own.
    """
    routes = request.app.router.routes
    scope = {**request.scope, "path_params": {}}
    methods = {
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))
