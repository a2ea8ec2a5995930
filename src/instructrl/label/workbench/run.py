"""The workbench app and its commands: ``instructrl label serve``, ``label import``, ``label export``."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import func, select

from instructrl.config import save_config
from instructrl.label.workbench import admin, api, dashboard, routes, screening_pages
from instructrl.label.workbench.config import ExportConfig, ImportConfig
from instructrl.label.workbench.export import export_project, find_project
from instructrl.label.workbench.imports import (
    import_items,
    project_in_org,
    publish_instructions,
    read_demonstration_items,
    read_rank_items,
)
from instructrl.records import RecordError
from instructrl.web.app import create_app
from instructrl.web.auth import Viewer
from instructrl.web.db import Database
from instructrl.web.migrate import upgrade
from instructrl.web.models import User
from instructrl.web.settings import WebSettings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SETTINGS_ENV = "INSTRUCTRL_WORKBENCH_SETTINGS"  # label serve workers=N hands its settings to the workers here


def home(viewer: Viewer) -> str:
    return {"admin": "/admin/projects", "applicant": "/screening"}.get(viewer.role, "/queue")


def nav(viewer: Viewer) -> list[tuple[str, str]]:
    if viewer.role == "applicant":
        return [("Screening", "/screening")]
    links = [("Queue", "/queue")]
    if viewer.is_admin:
        links += [("Projects", "/admin/projects"), ("Screening", "/admin/screening"), ("Users", "/admin/users")]
    return links


def build_app(settings: WebSettings, db: Database | None = None) -> FastAPI:
    """The workbench on the web foundation (the database must be migrated: :func:`serve` does it)."""
    return create_app(
        settings,
        [routes.router, admin.router, dashboard.router, screening_pages.router, api.router],
        db=db,
        template_dirs=[TEMPLATES],
        static_dirs={"workbench": STATIC},
        home=home,
        nav=nav,
        csrf_exempt=(api.PREFIX,),  # the bots' API authenticates by a header, not a cookie
    )


def serve(settings: WebSettings) -> None:
    """Migrate the database to the newest schema, then serve until stopped (Ctrl-C)."""
    import uvicorn  # only the server needs it

    db = Database(settings.db_url)
    revision = upgrade(db)
    with db.read() as session:
        users = session.scalar(select(func.count()).select_from(User))
    log.info("database %s at schema %s", db.url.render_as_string(), revision)
    if not users:
        log.warning(
            "no users yet: create the first admin with `instructrl label admin create-user username=NAME` (same db_url)"
        )
    log.info("workbench on http://%s:%d/login", settings.host, settings.port)
    if settings.workers == 1:
        uvicorn.run(build_app(settings, db), host=settings.host, port=settings.port, log_level="info")
        return
    # several processes: uvicorn starts each from an import string, so the settings travel in the environment
    db.dispose()
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_level="info",
    )


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``label serve workers=N`` (uvicorn calls it in each)."""
    return build_app(WebSettings(**json.loads(os.environ[SETTINGS_ENV])))


def import_cli(cfg: ImportConfig) -> str:
    """``instructrl label import``: read and check the whole file, then create every task in one transaction."""
    items = read_rank_items(cfg.file) if cfg.task == "rank" else read_demonstration_items(cfg.file)
    instructions = ""
    if cfg.instructions:
        try:
            instructions = Path(cfg.instructions).read_text(encoding="utf-8")
        except OSError as e:
            raise RecordError(cfg.instructions, None, f"cannot read the instructions: {e}") from None
    db = Database(cfg.db_url)
    try:
        upgrade(db)
        # one transaction: the project, its instructions and every task, or nothing at all
        with db.write() as session:
            project = project_in_org(session, cfg.org, cfg.project, create_priority=cfg.priority)
            publish_instructions(session, project.id, instructions, None)
            summary = import_items(
                session,
                project.id,
                cfg.task,
                items,
                labelers=cfg.labelers,
                overlap=cfg.overlap,
                per_item=cfg.labelers_per_item,
                seed=cfg.seed,
            )
    finally:
        db.dispose()
    return str(summary)


def export_cli(cfg: ExportConfig) -> Path:
    """``instructrl label export``: the exports of ``cfg.formats`` (rankings.jsonl, demonstrations.jsonl,
    prompts.jsonl, skips.jsonl; pairs.jsonl; hf/), agreement.json (the agreement dashboard's numbers) and
    config.yaml."""
    db = Database(cfg.db_url)
    try:
        upgrade(db)
        project_id = find_project(db, cfg)
        written = export_project(db, project_id, cfg.out_dir, cfg.formats)
        agreement = dashboard.write_report(db, project_id, Path(cfg.out_dir) / "agreement.json")
    finally:
        db.dispose()
    save_config(cfg, cfg.out_dir)
    for what, path in written.items():
        if path.is_dir():
            log.info("%s: a Hugging Face dataset -> %s", what, path)
            continue
        with open(path, encoding="utf-8") as fh:
            log.info("%s: %d records -> %s", what, sum(1 for _ in fh), path)
    log.info("agreement -> %s", agreement)
    return Path(cfg.out_dir)
