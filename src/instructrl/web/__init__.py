"""The web foundation shared by the labeling workbench and the playground.

* :mod:`.settings`: ``WebSettings``, the config of a web app (database URL, host, port, sessions).
* :mod:`.db`: the database (SQLite in WAL mode by default, PostgreSQL by URL), read and write sessions.
* :mod:`.models`: the tables (organizations, users, sessions, projects, tasks, labels, ...).
* :mod:`.migrate`: Alembic migrations, run on start.
* :mod:`.auth`, :mod:`.users`: passwords, sessions, CSRF, login rate limiting; users and their admin pages.
* :mod:`.app`: ``create_app(settings, routers)``, the FastAPI app with templates and static files.

It knows no stage: an app hands it its routers and templates. Nothing heavy is imported here, so
that ``import instructrl.web.settings`` stays light.
"""

import logging

# Alembic narrates every plugin it loads, at import, at INFO; migrate.upgrade logs one line of its own.
# Set here, as the package is entered, because that is before any of its modules imports alembic.
logging.getLogger("alembic").setLevel(logging.WARNING)
