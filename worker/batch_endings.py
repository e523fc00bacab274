"""How a batch ends: unfinished requests become error lines, then result files and the final move.

Whatever ends a batch (completion, a cancel, the expiry, a failure), the result files are written
and the status moved in one transaction, and the move is conditional: when another party moved the
batch first, both are undone so that only the winner's files remain.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from hybatch.batch_input import BatchInput
from hybatch.batch_lifecycle import move_batch
from hybatch.batch_results import finished_custom_ids, record_failure, write_result_files
from hybatch.models import Batch, BatchStatus
from hybatch.result_lines import error_line
from hybatch.storage import FileStorage


def record_unfinished(
    session: Session, batch: Batch, batch_input: BatchInput | None, *, code: str, message: str
) -> None:
    """Records an error line ``code`` for every request of ``batch_input`` not recorded yet.

    Nothing for an input that was never read or is invalid (there are no requests to report).
    Does not commit: the caller decides whether the lines go with the status move.
    """
    if batch_input is None or not batch_input.is_valid:
        return
    done = finished_custom_ids(session, batch.id)
    for request in batch_input.requests:
        if request.custom_id not in done:
            line = error_line(request.custom_id, code=code, message=message)
            record_failure(
                session,
                batch,
                custom_id=request.custom_id,
                line_number=request.line_number,
                line=line,
            )


def close_batch(
    session: Session,
    storage: FileStorage,
    batch: Batch,
    to_status: BatchStatus,
    from_statuses: tuple[BatchStatus, ...],
    **values: object,
) -> bool:
    """Writes the result files and moves the batch, in one transaction; True if the move won.

    When it loses (the batch is no longer in ``from_statuses``) the transaction is rolled back and
    the files this call wrote are deleted; files another delivery wrote earlier are kept.
    """
    session.flush()
    session.refresh(batch)  # another delivery may have written the files already
    had_files = (batch.output_file_id, batch.error_file_id)
    files = write_result_files(session, storage, batch)
    if move_batch(session, batch.id, to_status, from_statuses=from_statuses, **values):
        session.commit()
        return True
    session.rollback()
    for file_id in (files.output_file_id, files.error_file_id):
        if file_id is not None and file_id not in had_files:
            storage.delete(file_id)
    return False
