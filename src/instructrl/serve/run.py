"""``instructrl serve``: the models, their engines, the API and the playground in one server process; and the
admin commands ``serve key create``, ``serve key revoke`` and ``serve export``."""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from instructrl.records import PromptText, RecordError, write_jsonl
from instructrl.serve import api, playground
from instructrl.serve.config import KeyConfig, PromptExportConfig, RevokeConfig, ServeConfig
from instructrl.serve.engine import ENGINES
from instructrl.web.app import create_app
from instructrl.web.auth import Viewer
from instructrl.web.db import Database
from instructrl.web.keys import RateLimiter, any_keys, create_key, revoke_key
from instructrl.web.migrate import upgrade
from instructrl.web.prompts import training_prompts

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


@dataclass
class ServedModel:
    """A model behind the API: its name, tokenizer and engine."""

    name: str
    path: str
    tokenizer: Any
    engine: Any
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def max_context(self) -> int:
        return self.engine.max_context

    def encode_text(self, text: str) -> list[int]:
        """A completion prompt as the model reads raw text (with the tokenizer's usual special tokens)."""
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def encode_chat(self, messages: PromptText) -> list[int]:
        """Chat messages through the tokenizer's chat template, ending with the assistant's turn."""
        from instructrl.models.loading import render_prompt

        return self.tokenizer(render_prompt(self.tokenizer, messages), add_special_tokens=False)["input_ids"]


def load_models(cfg: ServeConfig) -> dict[str, ServedModel]:
    """Load every configured model and start its engine."""
    import torch

    from instructrl.models.loading import load_model, load_tokenizer
    from instructrl.utils.device import DTYPES, resolve_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    models = {}
    device = resolve_device(cfg.device)
    for name, path in cfg.model_dirs().items():
        try:
            tok = load_tokenizer(path, padding_side="left")
            model = load_model(path, dtype=DTYPES[cfg.dtype], tokenizer=tok, device=device)
        except (OSError, ValueError, KeyError) as e:  # a folder that is not a model, a hub id offline, a bad config
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RecordError(path, None, f"model {name!r} does not load: {first}") from None
        kwargs: dict[str, Any] = dict(max_context=cfg.max_context or None, threads=cfg.threads or None)
        if cfg.engine == "batched":
            kwargs.update(max_batch=cfg.max_batch, max_prefill=cfg.max_prefill)
        engine = ENGINES[cfg.engine](model, tok, **kwargs)
        engine.start()
        models[name] = ServedModel(name, path, tok, engine)
        log.info("model %s from %s on %s (%s engine, context %d)", name, path, device, cfg.engine, engine.max_context)
    return models


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Serving:
    """What the API and the playground share: the config, the models, the rate limiter, keyless mode."""

    def __init__(self, cfg: ServeConfig, db: Database, models: dict[str, ServedModel]):
        self.config, self.db, self.models = cfg, db, models
        self.limiter = RateLimiter(cfg.rate_limit_per_minute)
        self._keys_checked = (0.0, True)

    def keyless(self) -> bool:
        """Whether requests without a key are answered: only on a loopback address, and only while no key exists
        (checked at most once a second)."""
        if not is_loopback(self.config.host):
            return False
        at, exist = self._keys_checked
        if time.monotonic() - at > 1.0:
            exist = any_keys(self.db)
            self._keys_checked = (time.monotonic(), exist)
        return not exist

    def stop(self) -> None:
        for m in self.models.values():
            m.engine.stop()


def nav(viewer: Viewer) -> list[tuple[str, str]]:
    links = [("Chat", "/playground/chat"), ("Compare", "/playground/compare"), ("Data use", "/playground/data")]
    if viewer.is_admin:
        links.append(("Users", "/admin/users"))
    return links


def build_app(cfg: ServeConfig, db: Database, models: dict[str, ServedModel]) -> FastAPI:
    app = create_app(
        cfg,
        [api.router, playground.router],
        db=db,
        template_dirs=[HERE / "templates"],
        static_dirs={"playground": HERE / "static"},
        home=lambda viewer: "/playground/chat",
        nav=nav,
        csrf_exempt=("/v1/",),
    )
    app.state.serving = Serving(cfg, db, models)
    return app


def serve(cfg: ServeConfig) -> None:
    """Migrate the database, load the models, then serve the API and the playground until stopped."""
    import uvicorn

    db = Database(cfg.db_url)
    upgrade(db)
    models = load_models(cfg)
    app = build_app(cfg, db, models)
    if app.state.serving.keyless():
        log.warning(
            "no API keys exist: requests without a key are answered (this server listens on %s only). Make a key "
            "with `instructrl serve key create user=NAME`; from then on every API request needs one.",
            cfg.host,
        )
    elif not any_keys(db):
        log.warning("no API keys exist and %s is not a loopback address: every API request is refused", cfg.host)
    log.info("API on http://%s:%d/v1 (models: %s); playground on /playground", cfg.host, cfg.port, ", ".join(models))
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        app.state.serving.stop()


def key_create_cli(cfg: KeyConfig) -> str:
    db = Database(cfg.db_url)
    upgrade(db)
    with db.write() as session:
        key, row = create_key(session, cfg.user, cfg.name)
    log.info("key %s... for %s made; it is shown once, keep it now", row.prefix, cfg.user)
    return key


def key_revoke_cli(cfg: RevokeConfig) -> str:
    db = Database(cfg.db_url)
    upgrade(db)
    with db.write() as session:
        row = revoke_key(session, cfg.prefix)
        return f"revoked {row.prefix}..."


def export_cli(cfg: PromptExportConfig) -> str:
    """The prompts that may train the next round, as Prompt records ``instructrl curate`` reads."""
    db = Database(cfg.db_url)
    upgrade(db)
    n = 0

    def counted():
        nonlocal n
        for p in training_prompts(db, org=cfg.org, source=cfg.source):
            n += 1
            yield p

    path = write_jsonl(cfg.out, counted())
    log.info("%d prompts written", n)
    return str(path)
