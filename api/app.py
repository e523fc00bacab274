"""The FastAPI application factory: wiring only; routes live in ``api/routes``."""

from __future__ import annotations

from fastapi import FastAPI

from api.body_limit import BodySizeLimit
from api.dashboard import install_dashboard
from api.enqueue import CeleryEnqueuer
from api.errors import install_error_handlers
from api.lifespan import lifespan
from api.openapi import install_openapi
from api.routes import batches, billing, files, health, message_batches, models, quotas, usage, webhooks
from hybatch.batches import BatchEnqueuer
from hybatch.db import engine_from_settings, make_session_factory
from hybatch.settings import Settings, get_settings
from hybatch.storage import FileStorage, storage_from_settings

# Room for the multipart framing around an upload of exactly max_file_bytes.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    enqueue: BatchEnqueuer | None = None,
    storage: FileStorage | None = None,
) -> FastAPI:
    """Build the gateway. ``enqueue`` and ``storage`` default to Celery and the configured file storage."""
    settings = settings or get_settings()
    app = FastAPI(
        title="hybatch",
        summary="OpenAI-compatible Files and Batches API, with a usage dashboard",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_file_bytes + MULTIPART_OVERHEAD_BYTES)
    engine = engine_from_settings(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.storage = storage or storage_from_settings(settings)
    app.state.enqueue = enqueue or CeleryEnqueuer.from_settings(settings)
    install_error_handlers(app)
    install_openapi(app)
    for module in (health, files, batches, message_batches, models, usage, billing, quotas, webhooks):
        app.include_router(module.router)
    install_dashboard(app, settings)
    return app
