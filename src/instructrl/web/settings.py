"""``WebSettings``: the config of a web app (``instructrl label serve --config FILE`` loads it)."""

from __future__ import annotations

from dataclasses import dataclass

from instructrl.config import option


@dataclass
class WebSettings:
    """Where the database is, where the server listens, and how sign-in behaves."""

    db_url: str = option(
        "sqlite:///runs/workbench/workbench.db",
        "SQLAlchemy URL of the database: a SQLite file (created with its folder; WAL mode) or a PostgreSQL "
        "server, e.g. postgresql+psycopg://user:password@host:5432/instructrl.",
    )
    host: str = option("127.0.0.1", "Address to listen on (0.0.0.0 to serve other machines; put TLS in front).")
    port: int = option(8400, "TCP port to listen on.")
    workers: int = option(
        1,
        "Server processes (uvicorn workers) answering on the port. They share nothing but the database: on SQLite "
        "their writes take turns through its lock (BEGIN IMMEDIATE, busy_timeout), on PostgreSQL row locks.",
    )
    session_hours: float = option(12.0, "A sign-in lasts this long; then the user signs in again.")
    login_max_failures: int = option(
        5, "Failed sign-ins for one user name within login_window_s before sign-in with that name is refused."
    )
    login_max_failures_per_ip: int = option(
        50,
        "Failed sign-ins from one address within login_window_s before sign-in from it is refused (higher than "
        "per name: a team behind one router shares an address).",
    )
    login_window_s: int = option(900, "The window, in seconds, over which failed sign-ins are counted.")
    secure_cookies: bool = option(False, "Mark cookies Secure (only sent over HTTPS): set it when served over TLS.")
    title: str = option("instructrl", "Name shown in the page header.")

    def __post_init__(self) -> None:
        if not self.db_url.strip():
            raise ValueError("db_url must name a database, e.g. sqlite:///runs/workbench/workbench.db")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.session_hours <= 0:
            raise ValueError(f"session_hours must be > 0, got {self.session_hours}")
        if self.login_max_failures < 1 or self.login_max_failures_per_ip < 1:
            raise ValueError("login_max_failures and login_max_failures_per_ip must be >= 1")
        if self.login_window_s < 1:
            raise ValueError(f"login_window_s must be >= 1, got {self.login_window_s}")
