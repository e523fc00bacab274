"""Run the Alembic migrations in ``migrations/`` from code (``hybatch migrate``, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from hybatch.settings import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "migrations"


def alembic_config(database_url: str) -> Config:
    """Alembic configuration for ``database_url`` that leaves the caller's logging alone."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade_to_head(database_url: str) -> None:
    """Bring the schema at ``database_url`` to the newest revision (a no-op when already there)."""
    command.upgrade(alembic_config(database_url), "head")


def downgrade_to(database_url: str, revision: str) -> None:
    """Downgrade the schema at ``database_url`` to ``revision`` (``"base"`` drops everything)."""
    command.downgrade(alembic_config(database_url), revision)
