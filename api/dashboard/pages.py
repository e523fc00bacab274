"""Rendering: the Jinja environment (autoescaped, with the number filters) and the error page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from api.dashboard import formatting
from api.dashboard.deps import Viewer, viewer_if_signed_in

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(formatting.FILTERS)
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True

ERROR_TITLES = {
    400: "That request did not work",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible right now",
    413: "Too large",
}


def render(
    request: Request, template: str, viewer: Viewer | None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``template`` for ``viewer`` (None on the sign-in page) with the shared page context."""
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer, "active": None, **context},
        status_code=status_code,
    )


def render_page_error(request: Request, status_code: int, message: str) -> Response:
    """The dashboard's error page (JSON for its ``.json`` endpoints); registered on the app.

    A signed-in viewer keeps the navigation (the page is rendered for them, as any other page).
    """
    if request.url.path.endswith(".json"):
        return JSONResponse({"error": {"message": message}}, status_code=status_code)
    title = ERROR_TITLES.get(status_code, "Something went wrong")
    viewer = viewer_if_signed_in(request)
    return render(request, "error.html", viewer, status_code=status_code, title=title, message=message)
