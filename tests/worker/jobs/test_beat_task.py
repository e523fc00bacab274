from billing.invoicing.close_schedule import CLOSE_TASK
from worker import tasks
from worker.celery_app import app


def test_the_monthly_close_is_registered_and_scheduled():
    assert CLOSE_TASK in app.tasks
    assert app.tasks[CLOSE_TASK].name == tasks.close_previous_month.name == CLOSE_TASK
    assert any(entry["task"] == CLOSE_TASK for entry in app.conf.beat_schedule.values())
