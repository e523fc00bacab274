"""How a batch ends: unfinished requests become error lines, then result files and the final move.

Whatever ends a batch (completion, a cancel, the expiry, a failure), the error lines of the
requests nobody finished are written in bulk, a few thousand per short transaction (a 50,000-line
batch must end within seconds, and no transaction stays open long); then the result files are
written and the status moved in one transaction, and the move is conditional: when another party
moved the batch first, the files this call wrote are deleted so that only the winner's remain.

A shard still running elsewhere may record a request while this runs: the unique key on
(batch, custom_id) lets exactly one line per request in, whichever comes first, and the files
are written after every request has its line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy.orm import Session

from hybatch.batch_input import BatchRequest
from hybatch.batch_lifecycle import move_batch
from hybatch.batch_results import finished_custom_ids, record_failures, write_result_files
from hybatch.models import Batch, BatchStatus
from hybatch.result_lines import error_line
from hybatch.storage import FileStorage

ERROR_LINES_PER_TRANSACTION = 2000


def _chunks(items: Iterable[BatchRequest], size: int) -> Iterator[list[BatchRequest]]:
    chunk: list[BatchRequest] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def record_unfinished(
    session: Session, batch: Batch, requests: Iterable[BatchRequest], *, code: str, message: str
) -> int:
    """Records an error line ``code`` for every request of ``requests`` not recorded yet; returns how many.

    Commits after each ``ERROR_LINES_PER_TRANSACTION`` lines (and after the last).
    """
    done = finished_custom_ids(session, batch.id)
    session.commit()
    num_recorded = 0
    unfinished = (request for request in requests if request.custom_id not in done)
    for chunk in _chunks(unfinished, ERROR_LINES_PER_TRANSACTION):
        lines = [
            (
                request.custom_id,
                request.line_number,
                error_line(request.custom_id, code=code, message=message),
            )
            for request in chunk
        ]
        num_recorded += record_failures(session, batch, lines)
        session.commit()
    return num_recorded


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


def delete_shard_inputs(storage: FileStorage, keys: Iterable[str]) -> None:
    """Remove the stored shard requests of a batch that has ended (absent ones are no error)."""
    for key in keys:
        storage.delete(key)
