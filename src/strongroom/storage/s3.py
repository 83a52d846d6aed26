"""Storage in an S3 bucket or an S3-compatible store (MinIO, R2, B2) via boto3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from strongroom.errors import ObjectNotFound, StorageError, StorageTransientError
from strongroom.redaction import redact_text

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_AUTH = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequests",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    # the upload was damaged on the way (Content-MD5 or x-amz-checksum-* mismatch): resend
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
}


def safe_endpoint(url: str) -> str:
    """Return ``url`` without any ``user:password@`` part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def region() -> str:
    """The region from AWS_DEFAULT_REGION / AWS_REGION, else ``us-east-1``."""
    return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"


def timeouts_for(deadline: float) -> tuple[float, float]:
    """botocore's (connect, read) timeouts for an operation deadline: short enough that a
    stalled connection is abandoned and retried (by ``RetryingStorage``) within it."""
    return max(1.0, min(10.0, deadline / 4)), max(1.0, min(30.0, deadline / 2))


def make_client(
    endpoint_url: str | None = None,
    *,
    max_attempts: int = 1,
    connect_timeout: float = 5,
    read_timeout: float = 30,
) -> S3Client:
    """Build a thread-safe boto3 S3 client (credentials from the standard AWS sources).

    ``max_attempts`` counts botocore's attempts, the first included: 1 (no retries of its
    own) by default, because ``RetryingStorage`` owns the retry budget and the deadline."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=32,
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region(), config=config)


class S3Storage:
    """Objects stored as ``<prefix>/<key>`` in ``bucket``; S3 puts are atomic by nature."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None = None,
        client: Any = None,
        deadline: float | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        if client is None:
            connect, read = timeouts_for(deadline) if deadline else (5.0, 30.0)
            client = make_client(endpoint_url, connect_timeout=connect, read_timeout=read)
        self._client: S3Client = client
        self._base = f"{self.prefix}/" if self.prefix else ""

    # --- naming ---------------------------------------------------------------------
    def _key(self, key: str) -> str:
        return self._base + key

    def _shown_endpoint(self) -> str | None:
        endpoint = (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        return safe_endpoint(endpoint) if endpoint else None

    def describe(self) -> str:
        """``s3://bucket/prefix``, plus the endpoint (without credentials) when one is set."""
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        endpoint = self._shown_endpoint()
        return f"{where} (endpoint {endpoint})" if endpoint else where

    # --- errors ---------------------------------------------------------------------
    def _error(self, exc: Exception, operation: str, key: str) -> StorageError:
        """Translate a boto3/botocore exception into the strongroom error tree."""
        where = self.describe()
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _NOT_FOUND:
                return ObjectNotFound(f"object {key} not found in {where}")
            if code == "NoSuchBucket":
                endpoint = safe_endpoint(self._client.meta.endpoint_url)
                return StorageError(f"S3 bucket '{self.bucket}' does not exist at {endpoint}")
            if code in _AUTH:
                return StorageError(
                    f"S3 refused {operation} {key} on {where}: {code} "
                    "(check the access key, secret key and bucket permissions)"
                )
            if code in _TRANSIENT or status >= 500 or status == 429:
                return StorageTransientError(
                    f"S3 {operation} {key} on {where} failed: {code or status} (temporary)"
                )
            message = self._clean(str(error.get("Message", "")))
            detail = f"{code}: {message}" if message else code or str(status)
            return StorageError(f"S3 {operation} {key} on {where} failed: {detail}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"no usable S3 credentials for {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or configure an AWS profile)"
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            endpoint = safe_endpoint(self._client.meta.endpoint_url)
            return StorageTransientError(
                f"cannot connect to S3 endpoint {endpoint} ({type(exc).__name__})"
            )
        if isinstance(
            exc, ConnectionClosedError | ReadTimeoutError | HTTPClientError | IncompleteReadError
        ):
            return StorageTransientError(
                f"S3 {operation} {key} on {where} was interrupted ({type(exc).__name__})"
            )
        if isinstance(exc, FlexibleChecksumError):  # the body was damaged on the way
            return StorageTransientError(
                f"S3 {operation} {key} on {where}: the answer did not match its checksum"
            )
        if isinstance(exc, BotoCoreError):
            return StorageError(f"S3 {operation} {key} on {where} failed: {self._clean(str(exc))}")
        return StorageError(f"S3 {operation} {key} on {where} failed: {type(exc).__name__}")

    @staticmethod
    def _clean(text: str) -> str:
        secrets = (
            os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            os.environ.get("AWS_SESSION_TOKEN", ""),
        )
        return " ".join(redact_text(text, secrets).split())

    # --- operations -----------------------------------------------------------------
    def sync(self) -> None:
        """A completed PUT is already durable."""

    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` in one PUT (atomic on S3)."""
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "put", key) from exc

    def create(self, key: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``): S3, R2 and MinIO refuse it with 412
        when the object exists."""
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise self._error(exc, "create", key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "create", key) from exc
        return True

    def get(self, key: str) -> bytes:
        """Download the whole object, body included (so that a body cut short or damaged
        on the way fails this call, and a retry of it). The object's checksum, when the
        store keeps one, is checked (``FlexibleChecksumError`` on a mismatch)."""
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED"
            )
            body = response["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "get", key) from exc

    def _head(self, key: str, operation: str) -> int:
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, operation, key) from exc
        return int(response["ContentLength"])

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        try:
            self._head(key, "exists")
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """Content length from a HEAD request."""
        return self._head(key, "size")

    def delete(self, key: str) -> None:
        """Delete the object (S3 treats a missing object as deleted)."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, "delete", key)
            if not isinstance(error, ObjectNotFound):
                raise error from exc

    def list(self, prefix: str) -> Iterator[str]:
        """Yield keys under ``prefix`` (relative to this storage's prefix) via pagination."""
        paginator = self._client.get_paginator("list_objects_v2")
        start = len(self._base)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    name = item.get("Key", "")[start:]
                    if name and not name.endswith("/"):
                        yield name
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", prefix) from exc
