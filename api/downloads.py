"""Streaming downloads shared by the JSON API and the dashboard: stored files and billing exports."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from billing.invoicing import exports
from billing.periods import Period
from hybatch import files
from hybatch.models import File
from hybatch.storage import FileStorage

ExportFormat = Literal["csv", "json"]
EXPORT_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def file_download(storage: FileStorage, row: File, *, as_attachment: bool) -> StreamingResponse:
    """A stored file's bytes; ``as_attachment`` names it for a browser's save dialog."""
    headers = {"Content-Length": str(row.size_bytes)}
    if as_attachment:
        safe_name = "".join(char for char in row.filename if char.isalnum() or char in "._-") or row.id
        headers["Content-Disposition"] = f'attachment; filename="{safe_name}"'
    return StreamingResponse(
        files.open_file_content(storage, row), media_type="application/octet-stream", headers=headers
    )


def export_download(
    session: Session, period: str, export_format: ExportFormat, account_id: str | None
) -> StreamingResponse:
    """A closed month's billing export (of one account, or of all when None) as an attachment."""
    billing_period = Period.parse(period)
    summary, detail = exports.export_rows(session, billing_period, account_id)
    return StreamingResponse(
        exports.render(billing_period, summary, detail, export_format),
        media_type=EXPORT_MEDIA_TYPES[export_format],
        headers={
            "Content-Disposition": f'attachment; filename="hybatch-billing-{billing_period}.{export_format}"'
        },
    )
