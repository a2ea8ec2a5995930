"""Real ``instructrl serve`` processes for the serving tests: two tiny models (``a`` and ``b``, built offline)
on a free port of 127.0.0.1, over a SQLite file in a temporary folder. Tests talk to them with the official
``openai`` client, httpx or a browser, and set up users and keys straight in the same database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

for module in ("fastapi", "sqlalchemy", "alembic", "argon2", "httpx", "uvicorn"):
    pytest.importorskip(module, reason="the web extra is not installed: pip install -e '.[dev]'")

from instructrl.web.db import Database  # noqa: E402
from instructrl.web.keys import create_key  # noqa: E402
from instructrl.web.migrate import upgrade  # noqa: E402

from ..web.conftest import Workbench, postgres_url  # noqa: E402, F401  (postgres_url: a fixture)
from ..web.servers import ROOT as ROOT_DIR  # noqa: E402, F401  (for the tests)
from ..web.servers import Server, launch  # noqa: E402


@dataclass
class Serve(Workbench):
    """A serving process: the workbench tests' helpers (organizations, users, sign-in) and API keys."""

    server: Server | None = None
    models: dict[str, Path] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"{self.url}/v1"

    def key(self, username: str) -> str:
        with self.db.write() as session:
            return create_key(session, username)[0]


def hf_greedy(model, tok, ids: list[int], max_new: int) -> list[int]:
    """Hugging Face generate's greedy continuation of one prompt alone (the reference for the engines)."""
    import torch

    out = model.generate(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=max_new,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return out[0, len(ids) :].tolist()


@pytest.fixture(scope="session")
def second_model_dir(tmp_path_factory) -> Path:
    """Another tiny model (other random weights), so that two served models answer differently."""
    from instructrl.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-b") / "model", seed=1)


@contextlib.contextmanager
def serving(
    folder: Path, models: dict[str, Path], args: tuple[str, ...] = (), db_url: str | None = None
) -> Iterator[Serve]:
    db_url = db_url or f"sqlite:///{folder / 'serve.db'}"
    db = Database(db_url)
    upgrade(db)
    spec = ",".join(f"{name}={path}" for name, path in models.items())
    server = launch(
        db_url,
        folder,
        [f"models=[{spec}]", "threads=1", "login_max_failures=3", "default_max_tokens=24", *args],
        stage=("serve",),
        wait_s=120,
    )
    try:
        yield Serve(server.url, db_url, db, folder, server, models)
    finally:
        server.stop()
        db.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, second_model_dir) -> Iterator[Serve]:
    """A server of this test module alone (its keys and prompts are its own)."""
    with serving(tmp_path_factory.mktemp("serve"), {"a": tiny_model_dir, "b": second_model_dir}) as s:
        yield s
