"""What only the S3 storage has: its URL and settings, parts on the wire, age-based sweeps.

The shared contract (atomic writes, streaming, sweeps) runs in test_storage.py against a real
S3 server; here botocore's Stubber stands in where moto cannot show a property (it lists every
unfinished upload as started in 2010) or where a failure has to be injected.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from pydantic import ValidationError

from hybatch.errors import HybatchError
from hybatch.settings import Settings
from hybatch.storage import CHUNK_BYTES, LocalFileStorage, storage_from_settings
from hybatch.storage_s3 import CLIENT_CONFIG, MIN_PART_BYTES, S3FileStorage, S3Location
from tests.hybatch.s3_server import TEST_CREDENTIALS, new_s3_storage, running_s3_server, s3_client

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with running_s3_server() as endpoint_url:
        yield endpoint_url


def _stubbed_storage() -> tuple[S3FileStorage, Stubber]:
    client = boto3.client("s3", region_name="us-east-1", config=CLIENT_CONFIG, **TEST_CREDENTIALS)
    return S3FileStorage(client, S3Location(bucket="b", prefix="files")), Stubber(client)


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "key"),
    [
        ("s3://b", "b", "", "file-1"),
        ("s3://b/", "b", "", "file-1"),
        ("s3://b/files", "b", "files", "files/file-1"),
        ("s3://b/a/b/", "b", "a/b", "a/b/file-1"),
    ],
)
def test_location_from_url(url: str, bucket: str, prefix: str, key: str) -> None:
    location = S3Location.from_url(url)
    assert (location.bucket, location.prefix, location.key("file-1")) == (bucket, prefix, key)


@pytest.mark.parametrize("url", ["gs://bucket/files", "/srv/files", "s3://", "s3://Upper_Case/x"])
def test_settings_refuse_what_is_not_an_s3_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="HYBATCH_FILES_URL must look like s3://bucket/prefix"):
        Settings(data_dir=tmp_path, files_url=url)


def test_unset_or_empty_url_keeps_files_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBATCH_FILES_URL", "")
    settings = Settings(data_dir=tmp_path)
    assert settings.files_url is None
    storage = storage_from_settings(settings)
    assert isinstance(storage, LocalFileStorage) and storage.root == tmp_path.resolve() / "files"


def test_storage_from_settings_uses_the_standard_credential_chain(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_s3_storage(s3_endpoint).location.bucket
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    settings = Settings(
        data_dir=tmp_path, files_url=f"s3://{bucket}/up", s3_endpoint_url=s3_endpoint, s3_region="eu-west-1"
    )
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3FileStorage)
    with storage.open_write("file-1") as writer:
        writer.write(b"hi")
    stored = s3_client(s3_endpoint).get_object(Bucket=bucket, Key="up/file-1")
    assert stored["Body"].read() == b"hi"
    assert not (tmp_path / "files").exists()


def test_without_boto3_the_error_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hybatch.storage_s3", None)  # as if boto3 were not installed
    with pytest.raises(HybatchError, match=r"HYBATCH_FILES_URL.*'s3' extra"):
        storage_from_settings(Settings(data_dir=tmp_path, files_url="s3://bucket/files"))


def test_small_files_are_one_put_large_ones_a_multipart_upload(s3_endpoint: str) -> None:
    storage = new_s3_storage(s3_endpoint)
    with storage.open_write("file-small") as writer:
        writer.write(b"x" * 1000)
    with storage.open_write("file-large") as writer:
        for _ in range(20):
            writer.write(b"y" * MiB)

    def etag(file_id: str) -> str:
        head = storage.client.head_object(Bucket=storage.location.bucket, Key=storage.location.key(file_id))
        return head["ETag"].strip('"')

    assert "-" not in etag("file-small")
    assert etag("file-large").endswith("-3")  # 8 + 8 + 4 MiB


def test_files_at_the_bucket_root(s3_endpoint: str) -> None:
    storage = new_s3_storage(s3_endpoint, prefix="")
    with storage.open_write("file-root") as writer:
        writer.write(b"top")
    listed = storage.client.list_objects_v2(Bucket=storage.location.bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["file-root"]
    assert storage.sweep_incomplete(older_than=timedelta(0)) == 0


def test_part_size_below_the_s3_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        S3FileStorage(object(), S3Location("b", ""), part_bytes=MIN_PART_BYTES - 1)


def test_sweep_aborts_only_uploads_older_than_the_cutoff() -> None:
    storage, stubber = _stubbed_storage()
    now = datetime.now(UTC)
    uploads = [
        {"Key": "files/file-old", "UploadId": "u-old", "Initiated": now - timedelta(hours=3)},
        {"Key": "files/file-new", "UploadId": "u-new", "Initiated": now - timedelta(minutes=5)},
    ]
    stubber.add_response(
        "list_multipart_uploads",
        {"Uploads": uploads, "IsTruncated": False},
        {"Bucket": "b", "Prefix": "files/"},
    )
    stubber.add_response(
        "abort_multipart_upload", {}, {"Bucket": "b", "Key": "files/file-old", "UploadId": "u-old"}
    )
    with stubber:
        assert storage.sweep_incomplete(older_than=timedelta(hours=1)) == 1
    stubber.assert_no_pending_responses()


def test_a_failed_abort_does_not_hide_the_writers_error() -> None:
    storage, stubber = _stubbed_storage()
    stubber.add_response(
        "create_multipart_upload", {"UploadId": "u-1"}, {"Bucket": "b", "Key": "files/file-1"}
    )
    stubber.add_response(
        "upload_part",
        {"ETag": '"e1"'},
        {"Bucket": "b", "Key": "files/file-1", "UploadId": "u-1", "PartNumber": 1, "Body": ANY},
    )
    stubber.add_client_error(
        "abort_multipart_upload", service_error_code="InternalError", http_status_code=500
    )
    with (
        stubber,
        pytest.raises(RuntimeError, match="client went away"),
        storage.open_write("file-1") as writer,
    ):
        writer.write(b"z" * storage.part_bytes)
        raise RuntimeError("client went away")
    stubber.assert_no_pending_responses()


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_reads_pull_the_body_only_as_they_go() -> None:
    storage, stubber = _stubbed_storage()
    num_bytes = 20 * MiB
    raw: Any = _CountingStream(b"r" * num_bytes)
    stubber.add_response(
        "get_object", {"Body": StreamingBody(raw, num_bytes)}, {"Bucket": "b", "Key": "files/file-1"}
    )
    with stubber, storage.open_read("file-1") as reader:
        assert raw.bytes_read == 0
        assert reader.read(10) == b"r" * 10
        assert raw.bytes_read <= CHUNK_BYTES
        assert len(reader.read()) == num_bytes - 10
