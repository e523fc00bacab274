"""The shared tier: one engine loads a prefix another computed; unverifiable bytes are a miss.

Every engine-level test runs on both backends: a directory and an S3 bucket (moto in server mode,
spoken to over HTTP by the engine's own boto3 client, as in production).
"""

import random
import socket
import uuid

import pytest

from tests.hybatch.s3_server import TEST_CREDENTIALS, TEST_REGION, running_s3_server, s3_client
from worker.engine import LLM, SamplingParams
from worker.kv_cache.disk_store import SUFFIX, DiskEntry
from worker.kv_cache.metrics import render_prometheus
from worker.kv_cache.radix import Tier
from worker.kv_cache.shared_store import SharedStore

PARAMS = SamplingParams(temperature=0, max_tokens=8)
SYSTEM_LEN = 36


@pytest.fixture(scope="module")
def path(checkpoint_factory):
    return checkpoint_factory(sliding_window=8)


@pytest.fixture(scope="module")
def prompts():
    rng = random.Random(5)
    system = [rng.randrange(97) for _ in range(SYSTEM_LEN)]
    return [system + [rng.randrange(97) for _ in range(rng.randint(2, 9))] for _ in range(5)]


@pytest.fixture(scope="module")
def expected(path, prompts):
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    return [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)]


class DirectoryPlace:
    """The shared tier in a directory: the engine option, and its entries by name."""

    def __init__(self, root):
        self.root = root

    def options(self):
        return {"shared_cache_dir": self.root}

    def objects(self):
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob(f"*{SUFFIX}"))

    def read(self, name):
        return (self.root / name).read_bytes()

    def write(self, name, raw):
        (self.root / name).write_bytes(raw)

    def delete(self, name):
        (self.root / name).unlink()


class S3Place:
    """The shared tier in a bucket of its own on the test S3 server."""

    def __init__(self, endpoint_url):
        self.endpoint_url = endpoint_url
        self.client = s3_client(endpoint_url)
        self.bucket = f"hybatch-kv-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=self.bucket)

    def options(self):
        return {
            "shared_cache_url": f"s3://{self.bucket}/fleet/kv",
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": TEST_REGION,
        }

    def objects(self):
        listed = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)

    def read(self, name):
        return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def write(self, name, raw):
        self.client.put_object(Bucket=self.bucket, Key=name, Body=raw)

    def delete(self, name):
        self.client.delete_object(Bucket=self.bucket, Key=name)


@pytest.fixture(scope="module")
def s3_endpoint():
    with running_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture(params=["directory", "s3"])
def place(request, tmp_path, monkeypatch):
    if request.param == "directory":
        return DirectoryPlace(tmp_path / "shared")
    # The engine builds its client from boto3's own chain, as a worker does: the environment here.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    return S3Place(request.getfixturevalue("s3_endpoint"))


def make(path, disk_dir, place, **kw):
    return LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=4,
        kv_cache_gb=0.01,
        enable_prefix_caching=True,
        disk_cache_dir=disk_dir,
        disk_cache_gb=0.01,
        **place.options(),
        **kw,
    )


def run(llm, prompts, salt=None):
    outs = llm.generate([{"prompt_token_ids": p, "cache_salt": salt} for p in prompts], PARAMS)
    llm.engine.check_integrity()
    return outs


def publish_from_a(path, tmp_path, place, prompts, how, salt=None):
    a = make(path, tmp_path / "disk-a", place)
    run(a, prompts, salt)
    if how == "demote":  # write-through: entries the local tiers move to disk reach the shared tier
        a.engine.cache.demote_all()
        a.engine.check_integrity()
        assert a.engine.cache.num_entries(Tier.DISK) > 0
    if how != "call":  # "call": published at the end of the generate call, A still running
        a.close()
    assert place.objects()
    return a


@pytest.mark.parametrize("how", ["call", "close", "demote"])
def test_engine_b_hits_what_engine_a_computed_with_identical_outputs(
    path, prompts, expected, tmp_path, place, how
):
    publish_from_a(path, tmp_path, place, prompts, how)
    b = make(path, tmp_path / "disk-b", place)
    assert b.engine.cache.num_entries(Tier.DISK) == 0  # its own disk is empty: hits come from the shared tier
    outs = run(b, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert outs[0].num_cached_tokens >= SYSTEM_LEN
    metrics = b.cache_metrics()
    assert metrics.hit_tokens_shared >= SYSTEM_LEN
    assert f'tier="shared"}} {metrics.hit_tokens_shared}' in render_prometheus(metrics)
    b.close()


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete"])
def test_a_damaged_shared_object_is_a_miss_and_outputs_stay_right(
    path, prompts, expected, tmp_path, place, damage
):
    publish_from_a(path, tmp_path, place, prompts, "close")
    names = place.objects()
    for name in names:
        raw = bytearray(place.read(name))
        if damage == "corrupt":
            raw[-1] ^= 0xFF
            place.write(name, bytes(raw))
        elif damage == "truncate":
            place.write(name, bytes(raw[: len(raw) - 7]))
        else:
            place.delete(name)
    b = make(path, tmp_path / "disk-b", place)
    outs = run(b, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    metrics = b.cache_metrics()
    assert metrics.hit_tokens_shared == 0
    if damage != "delete":
        assert place.objects() == names  # a reader never deletes a shared object
        assert metrics.failed_loads > 0


def test_a_different_salt_never_hits_the_shared_tier(path, prompts, expected, tmp_path, place):
    publish_from_a(path, tmp_path, place, prompts, "close", salt="acct_a")
    b = make(path, tmp_path / "disk-b", place)
    outs = run(b, prompts, salt="acct_b")
    assert [o.outputs[0].token_ids for o in outs] == expected
    metrics = b.cache_metrics()
    assert metrics.hit_tokens_shared == 0 and metrics.hit_tokens_earlier_calls == 0
    assert b.engine.cache.num_entries(Tier.SHARED) == 0
    # The same salt does hit (the test above can fail).
    c = make(path, tmp_path / "disk-c", place)
    run(c, prompts, salt="acct_a")
    assert c.cache_metrics().hit_tokens_shared >= SYSTEM_LEN


def _entry(tokens=(1, 2, 3, 4), parent=None):
    return DiskEntry(b"\x01" * 16, parent, tuple(tokens), 0, 0)


def test_shared_store_verifies_namespace_tokens_and_parent(tmp_path):
    import torch

    payload = torch.arange(12, dtype=torch.float32)
    store = SharedStore(tmp_path, "model-a")
    assert store.put(_entry(), payload)
    assert torch.equal(store.load(_entry()), payload)
    assert store.header(_entry()) == _entry()
    assert store.load(_entry(tokens=(1, 2, 3, 5))) is None
    assert store.header(_entry(parent=b"\x02" * 16)) is None
    # The same file under another namespace's directory (copied by hand) is still refused.
    other = SharedStore(tmp_path, "model-b")
    name = _entry().block_hash.hex() + SUFFIX
    (other.directory / name).write_bytes((store.directory / name).read_bytes())
    assert other.load(_entry()) is None and other.header(_entry()) is None
    # No temporary files are left behind by a write.
    assert sorted(p.name for p in store.directory.iterdir()) == [name]


def test_without_a_disk_tier_demoted_entries_stay_in_the_shared_tier(path, prompts, expected, place):
    llm = LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=4,
        kv_cache_gb=0.01,
        enable_prefix_caching=True,
        **place.options(),
    )
    run(llm, prompts)
    llm.engine.cache.demote_all()
    llm.engine.check_integrity()
    assert llm.engine.cache.num_entries(Tier.DEVICE) == 0 and llm.engine.cache.num_entries(Tier.SHARED) > 0
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert llm.cache_metrics().hit_tokens_shared >= SYSTEM_LEN


class UnreachableS3Place:
    """A bucket at an endpoint nothing listens on."""

    def __init__(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{port}"

    def options(self):
        return {
            "shared_cache_url": "s3://kv/fleet",
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": TEST_REGION,
        }


def test_an_unreachable_bucket_is_a_miss_and_turns_writes_off(path, prompts, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    llm = make(path, tmp_path / "disk", UnreachableS3Place())
    assert llm.engine.cache.tiers.shared.writable
    outs = run(llm, prompts)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert not llm.engine.cache.tiers.shared.writable  # the call's publish failed: writes are off
    assert llm.cache_metrics().hit_tokens_shared == 0
    outs = run(llm, prompts)  # later calls go on, hitting the local tiers
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert outs[0].num_cached_tokens >= SYSTEM_LEN
    llm.close()


def test_a_shared_directory_and_a_bucket_together_are_refused(path, tmp_path):
    with pytest.raises(ValueError, match="shared_cache_dir and shared_cache_url"):
        LLM(path, device="cpu", shared_cache_dir=tmp_path / "shared", shared_cache_url="s3://kv/fleet")
