"""Server-rendered pages: one Jinja2 environment over the web templates and those of each app.

Autoescaping is on for every template, so text from users (prompts, responses, demonstrations, skip
reasons) is shown as text, never as markup. Pages carry no inline script (the Content-Security-Policy
forbids it); what a script needs from the page it reads from ``data-`` attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


def _when(moment: datetime | None) -> str:
    """A stored UTC time for people: ``2026-12-01 14:03 UTC``."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def build_templates(extra_dirs: Sequence[Path] = ()) -> jinja2.Environment:
    """The environment: an app's own templates first (it may override ours), then the web templates."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*map(str, extra_dirs), str(TEMPLATES)]),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` filled with ``context`` plus what every page shows: the viewer (when signed in),
    their CSRF token, the navigation and the site's title."""
    state = request.app.state
    viewer = getattr(request.state, "viewer", None)
    context.setdefault("csrf_token", viewer.csrf_token if viewer else context.get("login_token", ""))
    html = state.templates.get_template(template).render(
        request=request,
        viewer=viewer,
        title=state.settings.title,
        nav=state.nav(viewer) if viewer else [],
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
