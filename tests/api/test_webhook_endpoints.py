"""``/v1/webhook_endpoints`` driven by the official openai SDK's ``client.webhooks``, unchanged."""

from __future__ import annotations

import openai
import pytest

from tests.api.test_openai_sdk import base_url, sdk  # noqa: F401 (fixtures)


@pytest.fixture
def settings(settings):  # the deliveries of these tests go to loopback, which is refused by default
    return settings.model_copy(update={"webhook_allow_private": True})


def test_the_sdk_creates_lists_retrieves_and_deletes_endpoints(sdk: openai.OpenAI) -> None:  # noqa: F811
    created = sdk.webhooks.create(
        name="batches", url="http://127.0.0.1:9/hook", event_types=["batch.completed", "batch.failed"]
    )
    assert created.signing_secret.startswith("whsec_")
    assert created.event_types == ["batch.completed", "batch.failed"] and created.name == "batches"
    assert created.signing_secret_hint and created.signing_secret not in created.signing_secret_hint
    [listed] = sdk.webhooks.list().data
    assert listed.id == created.id and listed.url == "http://127.0.0.1:9/hook"
    retrieved = sdk.webhooks.retrieve(created.id)
    assert retrieved.event_types == created.event_types
    deleted = sdk.webhooks.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    assert sdk.webhooks.list().data == []
    with pytest.raises(openai.NotFoundError):
        sdk.webhooks.retrieve(created.id)


def test_bad_endpoints_are_clear_400s(sdk: openai.OpenAI, base_url: str, new_key) -> None:  # noqa: F811
    with pytest.raises(openai.BadRequestError, match="event types"):
        sdk.webhooks.create(name="x", url="http://127.0.0.1:9/hook", event_types=["response.completed"])
    with pytest.raises(openai.BadRequestError, match="http"):
        sdk.webhooks.create(name="x", url="ftp://example.com/hook", event_types=["batch.completed"])
    other = openai.OpenAI(base_url=base_url, api_key=new_key("someone-else"), max_retries=0)
    created = sdk.webhooks.create(name="x", url="http://127.0.0.1:9/hook", event_types=["batch.completed"])
    with pytest.raises(openai.NotFoundError):  # another account's endpoint does not exist for it
        other.webhooks.retrieve(created.id)


def test_long_urls_and_names(sdk: openai.OpenAI) -> None:  # noqa: F811
    long_url = "http://127.0.0.1:9/" + "a" * 500  # longer than a name may be
    created = sdk.webhooks.create(name=None, url=long_url, event_types=["batch.completed"])
    assert created.url == long_url and len(created.name) == 200 and created.name.endswith("...")
    with pytest.raises(openai.BadRequestError, match="at most 200 characters") as long_name:
        sdk.webhooks.create(name="n" * 201, url="http://127.0.0.1:9/x", event_types=["batch.completed"])
    assert long_name.value.body["param"] == "name"
    with pytest.raises(openai.BadRequestError, match="at most 2048 characters") as too_long:
        sdk.webhooks.create(name="x", url="http://127.0.0.1:9/" + "b" * 2048, event_types=["batch.completed"])
    assert too_long.value.body["param"] == "url"
    assert [endpoint.id for endpoint in sdk.webhooks.list().data] == [created.id]
