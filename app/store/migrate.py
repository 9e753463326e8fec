"""Alembic migrations shipped in app/store/migrations, applied programmatically.

Alembic is imported inside the functions, with its loggers at WARNING: on import and on every
context set-up it logs at INFO, which the CLI would print; one line of ours says what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class NewerSchemaError(Exception):
    """The database's schema revision is not one of ours: a newer sam-inspect made it."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"unknown schema revision {revision}")
        self.revision = revision


@dataclass(frozen=True)
class SchemaChange:
    """What upgrade() did: `before` None for a new database."""

    before: str | None
    after: str


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


def known_revisions() -> set[str]:
    with _quiet_alembic():
        from alembic.script import ScriptDirectory

        return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    with _quiet_alembic():
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()


def check_known(revision: str | None) -> None:
    """Raise NewerSchemaError for a revision these migrations do not know."""
    if revision is not None and revision not in known_revisions():
        raise NewerSchemaError(revision)


def upgrade(connection: Connection) -> SchemaChange | None:
    """Bring the schema to head inside the caller's transaction; what changed, or None when it
    was already there. NewerSchemaError for a database made by a newer version."""
    current, head = current_revision(connection), head_revision()
    if current == head:
        return None
    check_known(current)
    with _quiet_alembic():
        from alembic import command

        command.upgrade(alembic_config(connection=connection), "head")
    url = connection.engine.url.render_as_string(hide_password=True)
    log.info("database %s: schema %s -> %s", url, current or "(new)", head)
    return SchemaChange(current, head)
