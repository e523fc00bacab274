from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from hybatch.batch_lifecycle import UNFINISHED, current_status, move_batch
from hybatch.leases import Lease, new_lease_owner, take_batch
from hybatch.models import Batch, BatchStatus
from tests.hybatch.batch_rows import add_batch


def _lease() -> Lease:
    return Lease(owner=new_lease_owner(), duration=timedelta(seconds=30))


def test_happy_path_stamps_each_status(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        batch_id = add_batch(session).id
        assert take_batch(session, batch_id, _lease())
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
        assert not take_batch(session, batch_id, _lease())


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
        assert (
            not take_batch(session, "batch_nope", _lease()) and current_status(session, "batch_nope") is None
        )
