"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from hybatch.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(title="hybatch")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
