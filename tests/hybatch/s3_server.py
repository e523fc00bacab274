"""A real S3-compatible server for tests: moto in server mode on a free loopback port.

Tests talk to it over HTTP with boto3, exactly as the service talks to MinIO or AWS; each test
takes a bucket of its own, so nothing leaks between them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from hybatch.storage_s3 import CLIENT_CONFIG, S3FileStorage, S3Location

# moto accepts any credentials; these keep boto3 off the developer's own.
TEST_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
TEST_REGION = "us-east-1"


@contextmanager
def running_s3_server() -> Iterator[str]:
    """Start moto on 127.0.0.1 (port chosen by the OS); yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=TEST_REGION, config=CLIENT_CONFIG, **TEST_CREDENTIALS
    )


def new_s3_storage(endpoint_url: str, prefix: str = "files") -> S3FileStorage:
    """Storage in a fresh, empty bucket."""
    client = s3_client(endpoint_url)
    bucket = f"hybatch-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    return S3FileStorage(client, S3Location(bucket=bucket, prefix=prefix))


def stored_keys(storage: S3FileStorage) -> list[str]:
    """Every object and every unfinished upload in the storage's bucket, prefix or not."""
    bucket = storage.location.bucket
    objects = storage.client.list_objects_v2(Bucket=bucket).get("Contents", [])
    uploads = storage.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted([o["Key"] for o in objects] + [f"{u['Key']} (unfinished upload)" for u in uploads])
