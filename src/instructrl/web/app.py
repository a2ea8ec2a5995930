"""``create_app(settings, routers)``: the FastAPI app every web part of instructrl is served by.

It brings the database, sign-in (``/login``, ``/logout``), CSRF checks on every request that changes
something, user administration (``/admin/users``), the stylesheet (``/static/web/style.css``), error
pages and security headers. An app (the labeling workbench, the playground) hands it its routers, its
template folder, its static files, where a user lands after sign-in and its navigation links.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from instructrl.web import auth, users
from instructrl.web.db import Database
from instructrl.web.pages import STATIC, build_templates, render
from instructrl.web.settings import WebSettings

# scripts and styles only from this site, no inline script, no framing, no form posting elsewhere
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class SecurityHeaders:
    """Pure ASGI middleware (it does not buffer streamed responses) adding :data:`SECURITY_HEADERS`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _default_nav(viewer: auth.Viewer) -> list[tuple[str, str]]:
    return [("Users", "/admin/users")] if viewer.is_admin else []


def create_app(
    settings: WebSettings,
    routers: Sequence[APIRouter] = (),
    *,
    db: Database | None = None,
    template_dirs: Sequence[Path] = (),
    static_dirs: Mapping[str, Path] | None = None,
    home: Callable[[auth.Viewer], str] | None = None,
    nav: Callable[[auth.Viewer], list[tuple[str, str]]] | None = None,
    csrf_exempt: Sequence[str] = (),
) -> FastAPI:
    """The app. ``static_dirs`` maps a name to a folder served at ``/static/<name>/``; ``home`` gives the
    page a user lands on after sign-in; ``nav`` the ``(label, path)`` links in the header; ``csrf_exempt``
    path prefixes whose requests authenticate by a header, not a cookie (an API), and so need no CSRF token."""
    app = FastAPI(
        title=settings.title, docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(auth.csrf_guard)]
    )
    app.state.settings = settings
    app.state.db = db or Database(settings.db_url)
    app.state.templates = build_templates(template_dirs)
    app.state.home = home or (lambda viewer: "/admin/users" if viewer.is_admin else "/")
    app.state.nav = nav or _default_nav
    app.state.csrf_exempt = tuple(csrf_exempt)
    app.add_middleware(SecurityHeaders)

    app.include_router(auth.router)
    app.include_router(users.router)
    for router in routers:
        app.include_router(router)
    app.mount("/static/web", StaticFiles(directory=STATIC), name="static-web")
    for name, folder in (static_dirs or {}).items():
        app.mount(f"/static/{name}", StaticFiles(directory=folder), name=f"static-{name}")

    @app.get("/")
    def index(request: Request) -> Response:
        viewer = auth.optional_viewer(request)
        return RedirectResponse(request.app.state.home(viewer) if viewer else "/login", status_code=303)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.exception_handler(auth.LoginRequired)
    def _login_required(request: Request, _exc: auth.LoginRequired) -> Response:
        if request.method == "GET" and _wants_html(request):
            return auth.login_redirect(request)
        return JSONResponse({"detail": "Sign in first."}, status_code=401)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not _wants_html(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        auth.optional_viewer(request)  # so that the error page shows who is signed in
        message = exc.detail if exc.status_code != 404 else "There is no such page, or it is not yours to see."
        return render(request, "error.html", status_code=exc.status_code, code=exc.status_code, message=message)

    @app.exception_handler(RequestValidationError)
    def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        if not _wants_html(request):
            return JSONResponse({"detail": "Bad request."}, status_code=400)
        auth.optional_viewer(request)
        return render(request, "error.html", status_code=400, code=400, message="The request was not understood.")

    return app
