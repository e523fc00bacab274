from sqlalchemy.orm import Session, sessionmaker

from hybatch.batch_lifecycle import UNFINISHED, claim_batch, current_status, move_batch
from hybatch.models import Batch, BatchStatus
from tests.hybatch.batch_rows import add_batch


def test_happy_path_stamps_each_status(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        batch_id = add_batch(session).id
        assert claim_batch(session, batch_id)
        for from_status, to_status in [
            (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS),
            (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING),
            (BatchStatus.FINALIZING, BatchStatus.COMPLETED),
        ]:
            assert move_batch(session, batch_id, to_status, from_statuses=(from_status,))
            session.commit()
            assert current_status(session, batch_id) is to_status
        batch = session.get_one(Batch, batch_id)
        session.refresh(batch)
        assert batch.claimed_at and batch.in_progress_at and batch.finalizing_at and batch.completed_at
        assert batch.failed_at is None and batch.cancelled_at is None


def test_a_move_that_lost_the_race_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        batch_id = add_batch(session).id
        assert move_batch(session, batch_id, BatchStatus.CANCELLING, from_statuses=(BatchStatus.VALIDATING,))
        session.commit()
        assert not move_batch(
            session, batch_id, BatchStatus.IN_PROGRESS, from_statuses=(BatchStatus.VALIDATING,)
        )
        assert move_batch(session, batch_id, BatchStatus.CANCELLED, from_statuses=(BatchStatus.CANCELLING,))
        session.commit()
        assert current_status(session, batch_id) is BatchStatus.CANCELLED
        assert not claim_batch(session, batch_id)


def test_failure_carries_its_errors(session_factory: sessionmaker[Session]) -> None:
    errors = [{"code": "invalid_json_line", "line": 2, "message": "bad", "param": None}]
    with session_factory() as session:
        batch_id = add_batch(session).id
        assert move_batch(session, batch_id, BatchStatus.FAILED, from_statuses=UNFINISHED, errors=errors)
        session.commit()
        batch = session.get_one(Batch, batch_id)
        session.refresh(batch)
        assert batch.status is BatchStatus.FAILED and batch.failed_at and batch.errors == errors


def test_unknown_batch(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        assert not claim_batch(session, "batch_nope") and current_status(session, "batch_nope") is None
