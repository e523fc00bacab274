"""What the batch pages say became of the requests: completed, failed, never run (and why), the
files a finished batch left, and the prefix-cache counters beside the billed input tokens."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from fastapi.testclient import TestClient

from hybatch.db import make_engine
from hybatch.models import Batch
from hybatch.settings import Settings
from tests.api.dashboard.batch_states import BatchStates
from tests.api.dashboard.world import World


def _live(client: TestClient, batch_id: str) -> dict:
    [fields] = client.get(f"/dashboard/batches/progress.json?ids={batch_id}").json()["batches"]
    return fields


def _bar(page: str) -> str:
    return re.search(r'<progress max="100" value="(\d+)"', page).group(1)


def _note(page: str, element_id: str) -> str:
    """The text of the paragraph or list item ``element_id``, tags removed, spaces collapsed."""
    match = re.search(rf'id="{element_id}">(.*?)</(p|li)>', page, re.S)
    assert match is not None, f"no #{element_id} on the page"
    return " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split())


def test_a_batch_cancelled_after_one_request(
    sign_in: Callable[[str], TestClient], world: World, states: BatchStates
) -> None:
    client = sign_in(world.alice_secret)
    api = client.get(
        f"/v1/batches/{states.cancelled_id}", headers={"Authorization": f"Bearer {world.alice_secret}"}
    )
    assert api.json()["request_counts"] == {"total": 300, "completed": 1, "failed": 299}  # OpenAI's counts
    page = client.get(f"/dashboard/batches/{states.cancelled_id}").text
    assert "300 / 300" not in page and "1 / 300" in page
    assert _bar(page) == "0"  # the bar shows completed requests: 1 of 300 rounds down to 0%
    outcomes = _note(page, "request-outcomes")
    assert outcomes == "Failed: 0 · Not run (not billed): 299 cancelled"
    fields = _live(client, states.cancelled_id)
    assert (fields["percent"], fields["text"]["progress"]) == (0, "1 / 300")
    assert (fields["text"]["failed"], fields["text"]["not_run"]) == ("0", "299 cancelled")
    assert fields["text"]["outcomes"] == "299 cancelled"
    cancel = client.get(f"/dashboard/batches/{states.cancelled_id}/cancel").text
    assert "can no longer be cancelled" in cancel


def test_each_outcome_is_counted_on_its_own(
    sign_in: Callable[[str], TestClient], world: World, states: BatchStates
) -> None:
    client = sign_in(world.alice_secret)
    expected = {
        states.completed_id: (80, "4 / 5", "1 failed"),
        states.expired_id: (40, "20 / 50", "30 expired"),
        states.failed_id: (0, "none ran", ""),
        states.cancelled_early_id: (0, "none ran", ""),
        world.alice_running_batch_id: (25, "10 / 40", ""),
    }
    for batch_id, (percent, progress, outcomes) in expected.items():
        fields = _live(client, batch_id)
        assert (fields["percent"], fields["text"]["progress"], fields["text"]["outcomes"]) == (
            percent,
            progress,
            outcomes,
        ), batch_id
    listing = client.get("/dashboard/batches").text
    row = re.search(rf'<tr data-batch-id="{states.cancelled_id}".*?</tr>', listing, re.S).group(0)
    assert "1 / 300" in row and 'data-field="outcomes">299 cancelled<' in row
    assert "Requests completed" in listing and "Requests done" not in listing


def test_a_batch_that_failed_validation_shows_no_progress(
    sign_in: Callable[[str], TestClient], world: World, states: BatchStates
) -> None:
    page = sign_in(world.alice_secret).get(f"/dashboard/batches/{states.failed_id}").text
    assert _bar(page) == "0" and "0 / 0" not in page and "none ran" in page
    assert _note(page, "request-outcomes") == "The batch failed before any request ran (see Errors)."
    assert "Line 3 is not valid JSON." in page


def test_finished_batches_say_what_files_they_have(
    sign_in: Callable[[str], TestClient], world: World, states: BatchStates
) -> None:
    client = sign_in(world.alice_secret)
    later = "Output and error files appear here when the batch finishes."
    notes = {
        states.failed_id: "This batch produced no output or error file: the batch failed before any "
        "request ran (see Errors).",
        states.cancelled_early_id: "This batch produced no output or error file: the batch was "
        "cancelled before any request ran.",
    }
    for batch_id, note in notes.items():
        page = client.get(f"/dashboard/batches/{batch_id}").text
        assert later not in page and _note(page, "files-note") == note, batch_id
        assert "Download output" not in page and "Download errors" not in page
    for batch_id in (states.cancelled_id, states.completed_id, states.expired_id):
        page = client.get(f"/dashboard/batches/{batch_id}").text
        assert later not in page and 'id="files-note"' not in page, batch_id
        assert "Download output" in page and "Download errors" in page
    # a finished batch whose requests all completed has no error file, and says why
    with_output_only = client.get(f"/dashboard/batches/{world.alice_finished_batch_id}").text
    assert _note(with_output_only, "files-note") == "No error file: no request failed."
    running = client.get(f"/dashboard/batches/{world.alice_running_batch_id}").text
    assert _note(running, "files-note") == later


def test_cache_lookups_are_explained_beside_the_billed_input_tokens(
    sign_in: Callable[[str], TestClient], world: World, states: BatchStates, settings: Settings
) -> None:
    client = sign_in(world.alice_secret)
    page = client.get(f"/dashboard/batches/{states.cancelled_id}").text
    assert "looked up the prompts of 67 requests" in page and "867 prompt tokens, of which 0" in page
    explained = _note(page, "cache-vs-billed")
    assert explained.startswith(
        "Billed input tokens: 13 (0 from the cache), counted once per completed request (1 completed)."
    )
    assert "did not complete" in explained and "ran again after a worker restart" in explained
    # When the engine's counters are the billed tokens, the page says so instead.
    engine = make_engine(settings.database_url)
    with engine.begin() as connection:
        batch = connection.execute(sa.select(Batch).where(Batch.id == states.completed_id)).one()
        metrics = {"lookups": 4, "lookup_tokens": batch.input_tokens, "hit_tokens": batch.cached_input_tokens}
        metrics["hit_rate"] = batch.cached_input_tokens / batch.input_tokens
        connection.execute(
            sa.update(Batch).where(Batch.id == states.completed_id).values(cache_metrics=metrics)
        )
    engine.dispose()
    consistent = client.get(f"/dashboard/batches/{states.completed_id}").text
    assert _note(consistent, "cache-vs-billed") == "These are the input tokens billed above."
