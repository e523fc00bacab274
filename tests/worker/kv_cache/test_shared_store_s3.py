"""The shared tier in an S3 bucket, against a real S3-compatible server (moto in server mode, over HTTP).

The same trust rules as the directory (test_shared_tier.py runs the engine on both): a load verifies
checksum, namespace, block hash, parent hash, token ids, depth and window length; anything else is a
miss. An S3 error on a read is a miss; on a write it turns writes off, and loads go on.
"""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from botocore.exceptions import ClientError

from tests.hybatch.s3_server import TEST_CREDENTIALS, TEST_REGION, running_s3_server, s3_client
from worker.kv_cache.disk_store import DiskEntry, encode_entry
from worker.kv_cache.shared_store_s3 import HEADER_READ_BYTES, S3SharedStore, parse_url
from worker.kv_cache.shared_tier import open_shared_tier

REPO_ROOT = Path(__file__).resolve().parents[3]
HASH = b"\x01" * 16
PARENT = b"\x07" * 16


@pytest.fixture(scope="module")
def s3_endpoint():
    with running_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def bucket(s3_endpoint):
    name = f"hybatch-kv-{uuid.uuid4().hex[:16]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def _store(s3_endpoint, bucket, namespace="model-a"):
    return S3SharedStore(s3_client(s3_endpoint), bucket, "fleet/kv", namespace)


def _entry(tokens=(1, 2, 3, 4), parent=PARENT, depth=1, window_len=4):
    return DiskEntry(HASH, parent, tuple(tokens), depth, window_len)


def _calls(store, operation=None):
    """Records the params of every request ``operation`` (e.g. "PutObject"; None: any) the store's
    client sends."""
    event = f"provide-client-params.s3.{operation}" if operation else "provide-client-params.s3"
    seen = []
    store.client.meta.events.register(event, lambda params, **_: seen.append(params))
    return seen


def _keys(store):
    listed = store.client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def _raw(store):
    return store.client.get_object(Bucket=store.bucket, Key=store.key(HASH))["Body"].read()


def _replace(store, raw):
    store.client.put_object(Bucket=store.bucket, Key=store.key(HASH), Body=raw)


PAYLOAD = torch.arange(12, dtype=torch.float32)


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [("s3://b", "b", ""), ("s3://b/", "b", ""), ("s3://b/kv", "b", "kv"), ("s3://b/a/kv/", "b", "a/kv")],
)
def test_parse_url(url, bucket, prefix):
    assert parse_url(url) == (bucket, prefix)


def test_a_round_trip_under_the_prefix_and_the_namespace(s3_endpoint, bucket):
    store = _store(s3_endpoint, bucket)
    assert HASH not in store and store.load(_entry()) is None and store.header(_entry()) is None
    assert store.put(_entry(), PAYLOAD)
    assert _keys(store) == [f"fleet/kv/model-a/{HASH.hex()}.kv"]  # one object, no temporary names
    assert HASH in store
    assert torch.equal(store.load(_entry()), PAYLOAD)
    assert store.header(_entry(window_len=0)) == _entry()  # a header match takes any window length
    # Another worker's store on the same bucket reads it too.
    assert torch.equal(_store(s3_endpoint, bucket).load(_entry()), PAYLOAD)


def test_a_put_of_an_entry_already_there_is_skipped(s3_endpoint, bucket):
    store = _store(s3_endpoint, bucket)
    puts, heads = _calls(store, "PutObject"), _calls(store, "HeadObject")
    assert store.put(_entry(), PAYLOAD)
    assert store.put(_entry(), PAYLOAD + 1)
    assert (len(puts), len(heads)) == (1, 2)
    assert torch.equal(store.load(_entry()), PAYLOAD)  # the first write stays


@pytest.mark.parametrize("num_tokens", [4, 3000])  # 3000 ids: a header longer than one ranged read
def test_header_reads_only_the_header(s3_endpoint, bucket, num_tokens):
    store = _store(s3_endpoint, bucket)
    entry = _entry(tokens=range(num_tokens))
    payload = torch.zeros(256 * 1024, dtype=torch.float32)  # 1 MiB of KV
    assert store.put(entry, payload)
    gets = _calls(store, "GetObject")
    assert store.header(entry) == entry
    assert gets and all(g["Range"].startswith("bytes=") for g in gets)
    assert len(gets) == (1 if num_tokens == 4 else 2)
    last = int(gets[-1]["Range"].rpartition("-")[2])
    assert last < HEADER_READ_BYTES * 8 < payload.numel() * 4


def test_a_damaged_header_length_never_reads_on_into_the_payload(s3_endpoint, bucket):
    store = _store(s3_endpoint, bucket)
    assert store.put(_entry(), torch.zeros(256 * 1024, dtype=torch.float32))
    raw = _raw(store)
    _replace(store, struct.pack("<Q", len(raw)) + raw[8:])  # "the header is the whole object"
    gets = _calls(store, "GetObject")
    assert store.header(_entry()) is None
    assert [g["Range"] for g in gets] == [f"bytes=0-{HEADER_READ_BYTES - 1}"]


def _flip_header_byte(raw):
    raw = bytearray(raw)
    raw[raw.index(b'"token_ids"') + 3] ^= 0x01  # inside the JSON header: another key name
    return bytes(raw)


DAMAGE = {
    "truncate the payload": lambda raw: raw[:-7],
    "flip a payload byte": lambda raw: raw[:-1] + bytes([raw[-1] ^ 0xFF]),
    "flip a header byte": _flip_header_byte,
    "truncate the header": lambda raw: raw[:20],
    "only the length": lambda raw: raw[:8],
    "garbage": lambda raw: b"not a cache entry at all",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_object_is_a_miss_with_a_warning_and_stays(s3_endpoint, bucket, damage, caplog):
    store = _store(s3_endpoint, bucket)
    assert store.put(_entry(), PAYLOAD)
    damaged = DAMAGE[damage](_raw(store))
    _replace(store, damaged)
    with caplog.at_level(logging.WARNING):
        assert store.load(_entry()) is None
    assert "treating it as a miss" in caplog.text
    if damage != "truncate the payload" and damage != "flip a payload byte":
        assert store.header(_entry()) is None
    assert _raw(store) == damaged  # a reader never deletes nor rewrites a shared object


@pytest.mark.parametrize(
    "asked",
    [
        _entry(parent=b"\x08" * 16),
        _entry(parent=None),
        _entry(tokens=(1, 2, 3, 5)),
        _entry(depth=2),
    ],
    ids=["another parent", "no parent", "other tokens", "another depth"],
)
def test_another_prefix_under_the_same_hash_is_a_miss(s3_endpoint, bucket, asked):
    store = _store(s3_endpoint, bucket)
    assert store.put(_entry(), PAYLOAD)
    assert store.load(asked) is None and store.header(asked) is None
    assert torch.equal(store.load(_entry()), PAYLOAD)  # the entry itself still loads


def test_another_window_length_is_a_miss_on_load(s3_endpoint, bucket):
    store = _store(s3_endpoint, bucket)
    assert store.put(_entry(window_len=4), PAYLOAD)
    assert store.load(_entry(window_len=0)) is None


def test_an_object_of_another_namespace_is_never_read(s3_endpoint, bucket):
    a, b = _store(s3_endpoint, bucket, "model-a"), _store(s3_endpoint, bucket, "model-b")
    assert a.put(_entry(), PAYLOAD)
    assert b.load(_entry()) is None and HASH not in b  # its own key prefix holds nothing
    # The same bytes copied under model-b's key (by hand) are still refused: the header names model-a.
    b.client.put_object(Bucket=bucket, Key=b.key(HASH), Body=_raw(a))
    assert b.load(_entry()) is None and b.header(_entry()) is None
    # Bytes that say model-b under model-b's key do load (the check above can fail).
    b.client.put_object(
        Bucket=bucket, Key=b.key(HASH), Body=encode_entry(_entry(), PAYLOAD, {"namespace": "model-b"})
    )
    assert torch.equal(b.load(_entry()), PAYLOAD)


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_is_a_miss_and_turns_writes_off(monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    store = open_shared_tier(
        "model-a",
        url="s3://kv/fleet",
        s3_endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        s3_region=TEST_REGION,
    )
    assert isinstance(store, S3SharedStore)
    with caplog.at_level(logging.WARNING):
        assert store.load(_entry()) is None and store.header(_entry()) is None and HASH not in store
        assert "treating it as a miss" in caplog.text
        assert store.writable and not store.put(_entry(), PAYLOAD)
        assert not store.writable and "no more writes" in caplog.text
    sent = _calls(store)
    assert not store.put(_entry(), PAYLOAD) and sent == []  # writes off: no request at all


def test_a_failed_write_turns_writes_off_and_loads_go_on(s3_endpoint, bucket, caplog):
    writer, reader = _store(s3_endpoint, bucket), _store(s3_endpoint, bucket)
    assert writer.put(_entry(), PAYLOAD)

    def deny(**_):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "PutObject")

    reader.client.meta.events.register("before-call.s3.PutObject", deny)
    other = DiskEntry(b"\x02" * 16, None, (9, 9, 9, 9), 0, 0)
    with caplog.at_level(logging.WARNING):
        assert not reader.put(other, PAYLOAD)
    assert not reader.writable and "AccessDenied" in caplog.text
    assert torch.equal(reader.load(_entry()), PAYLOAD) and reader.header(_entry()) == _entry()
    assert _keys(writer) == [writer.key(HASH)]


def test_a_directory_and_a_url_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        open_shared_tier("model-a", tmp_path, "s3://kv/fleet")
    assert open_shared_tier("model-a") is None


def test_the_engine_and_the_directory_tier_need_no_boto3(tmp_path):
    # A GPU machine with only torch, triton, numpy, safetensors and tokenizers: boto3 is imported only
    # for an s3:// URL, and then a missing boto3 says what to install.
    code = f"""
import sys
sys.modules["boto3"] = sys.modules["botocore"] = None  # "not installed": importing them fails
import worker.engine, worker.kv_cache.prefix_cache, worker.kv_cache.lower_tiers
from worker.kv_cache.shared_tier import open_shared_tier
assert open_shared_tier("ns", {str(tmp_path)!r}) is not None
try:
    open_shared_tier("ns", url="s3://kv/fleet")
except RuntimeError as error:
    assert "'s3' extra" in str(error), error
else:
    raise AssertionError("no error without boto3")
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
