"""Alembic migrations shipped in app/store/migrations, applied programmatically.

Alembic is imported inside the functions, with its loggers at WARNING: on import and on every
context set-up it logs at INFO, which the CLI would print; one line of ours says what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """Config for the shipped migrations; `connection`: run them in the caller's transaction."""
    with _quiet_alembic():
        from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    with _quiet_alembic():
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    with _quiet_alembic():
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Bring the schema to head inside the caller's transaction (no-op when already there)."""
    current, head = current_revision(connection), head_revision()
    if current == head:
        return
    with _quiet_alembic():
        from alembic import command

        command.upgrade(alembic_config(connection=connection), "head")
    url = connection.engine.url.render_as_string(hide_password=True)
    log.info("database %s: schema %s -> %s", url, current or "(new)", head)
