"""The viewer's pages: the study browser and the study viewer, behind the web shell's sign-in.

The viewer sits below the web shell in the layers, so it cannot import the shell's page tools;
`build_page_router` takes them (the template environment, the route class that turns errors
into pages, the signed-in dependency and the page headers) from the application that wires both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader

from voxelhub.auth.service import Principal
from voxelhub.core.errors import NotFound

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"

# A DICOM UID: dot-separated numbers, at most 64 characters (PS3.5 9.1).
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UID_MAX = 64

# The window presets offered in the toolbar (width, center) in HU.
PRESETS: list[dict[str, Any]] = [
    {"name": "Lung", "width": 1500, "center": -600, "key": "1"},
    {"name": "Mediastinum", "width": 350, "center": 50, "key": "2"},
    {"name": "Bone", "width": 2000, "center": 300, "key": "3"},
    {"name": "Brain", "width": 80, "center": 40, "key": "4"},
    {"name": "Abdomen", "width": 400, "center": 50, "key": "5"},
]


def _viewer_environment(shell: Environment) -> Environment:
    """The shell's environment (filters, globals such as the navigation) plus our templates."""
    loaders: list[BaseLoader] = [FileSystemLoader(TEMPLATES_DIR)]
    if shell.loader is not None:
        loaders.append(shell.loader)
    return shell.overlay(loader=ChoiceLoader(loaders))


def build_page_router(
    *,
    environment: Environment,
    route_class: type[APIRoute],
    signed_in: Callable[..., Principal],
    headers: Mapping[str, str],
) -> APIRouter:
    """The pages `/viewer` and `/viewer/studies/{study_uid}`, rendered like the shell's pages."""
    templates = _viewer_environment(environment)
    router = APIRouter(include_in_schema=False, route_class=route_class)
    # A default, not an Annotated alias: annotations are resolved in the module's namespace.
    signed_in_user = Depends(signed_in)

    def render(request: Request, template: str, **context: Any) -> HTMLResponse:
        html = templates.get_template(template).render(
            principal=getattr(request.state, "web_principal", None),
            csrf_token=getattr(request.state, "web_csrf", ""),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, headers=dict(headers))

    @router.get("/viewer")
    def study_browser(request: Request, principal: Principal = signed_in_user) -> HTMLResponse:
        """The studies the signed-in user may see, searchable, with each study's series."""
        return render(request, "viewer_browser.html")

    @router.get("/viewer/studies/{study_uid}")
    def study_viewer(
        study_uid: str, request: Request, principal: Principal = signed_in_user
    ) -> HTMLResponse:
        """One study in viewports; the page's module loads it through the viewer API."""
        if len(study_uid) > UID_MAX or not _UID.match(study_uid):
            raise NotFound(
                f"{study_uid[:80]!r} is not a study instance UID (digits and dots, at most "
                f"{UID_MAX} characters); open a study from the study browser at /viewer"
            )
        return render(request, "viewer_study.html", study_uid=study_uid, presets=PRESETS)

    return router
