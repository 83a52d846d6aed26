"""Storage in an S3 bucket or an S3-compatible store (MinIO, R2, B2) via boto3.

Stores that implement neither flexible checksums (``x-amz-checksum-*`` headers) nor
``aws-chunked`` uploads, which boto3 sends by default (R2 until 2025, older MinIO and Ceph
gateways), answer them ``501 NotImplemented`` (or 400 naming the header). ``S3Storage``
then switches to a client that sends checksums only where S3 requires them (botocore's
``when_required``, as ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` does), protects
uploads with ``Content-MD5`` instead, stops asking for the object's checksum on GET (the
repository checks every chunk's hash anyway), and repeats the request once. The switch
lasts as long as the ``S3Storage``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
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
from strongroom.storage.base import check_range, short_read

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("strongroom.storage")

T = TypeVar("T")

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
_PERMANENT_5XX = {"NotImplemented", "501", "505"}
_REDIRECT = {"PermanentRedirect", "301", "Redirect", "TemporaryRedirect", "307"}
# what a store that does not implement flexible checksums or aws-chunked names in its 400
_CHECKSUM_WORDS = re.compile(
    r"checksum|aws-chunked|x-amz-content-sha256|x-amz-trailer|x-amz-decoded-content-length"
    r"|streaming-|trailer",
    re.IGNORECASE,
)
_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "CLOUDFLARE_SECRET_ACCESS_KEY",
)
_MAX_MESSAGE = 300  # characters of the store's message shown
_MD5_HEX = re.compile(r"[0-9a-f]{32}")


def _answer(exc: ClientError) -> tuple[str, int, str]:
    """The store's error code, HTTP status and message."""
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(error.get("Code", "")), status, str(error.get("Message", ""))


def _setting(client: Any, name: str) -> str:
    """A checksum setting of ``client``'s configuration, lower case ("" when unknown)."""
    return str(getattr(client.meta.config, name, "") or "").lower()


def checksums_unsupported(exc: BaseException) -> bool:
    """Whether ``exc`` is a store's refusal of flexible checksums or aws-chunked bodies:
    any 501 / ``NotImplemented``, or a 400 whose code or message names them."""
    if not isinstance(exc, ClientError):
        return False
    code, status, message = _answer(exc)
    if code in _TRANSIENT:  # BadDigest & co: the body was damaged on the way
        return False
    if code == "NotImplemented" or status == 501:
        return True
    return status == 400 and bool(_CHECKSUM_WORDS.search(f"{code} {message}"))


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
    checksums: bool | None = None,
) -> S3Client:
    """Build a thread-safe boto3 S3 client (credentials from the standard AWS sources).

    ``max_attempts`` counts botocore's attempts, the first included: 1 (no retries of its
    own) by default, because ``RetryingStorage`` owns the retry budget and the deadline.
    ``checksums=False`` sends and checks flexible checksums only where S3 requires them
    (``when_required``); None leaves botocore's default (``AWS_REQUEST_CHECKSUM_CALCULATION``
    and ``AWS_RESPONSE_CHECKSUM_VALIDATION`` or the AWS config file, else
    ``when_supported``)."""
    options: dict[str, Any] = {}
    if checksums is False:
        options = {
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=32,
        **options,
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
        self._timeouts = timeouts_for(deadline) if deadline else (5.0, 30.0)
        if client is None:
            connect, read = self._timeouts
            client = make_client(endpoint_url, connect_timeout=connect, read_timeout=read)
            if _setting(client, "request_checksum_calculation") == "when_required":
                # AWS_REQUEST_CHECKSUM_CALCULATION=when_required: no checksum at all (GET's
                # validation too, which botocore would otherwise ask for on its own)
                client = make_client(
                    endpoint_url, connect_timeout=connect, read_timeout=read, checksums=False
                )
        self._client: S3Client = client
        # the client without flexible checksums: from the start when configured so, else
        # once the store refused them
        plain = all(
            _setting(client, name) == "when_required"
            for name in ("request_checksum_calculation", "response_checksum_validation")
        )
        self._plain: S3Client | None = client if plain else None
        self._switch = threading.Lock()
        self._etag_is_md5 = False  # learnt when an object's ETag was its MD5 (no checksums)
        self._base = f"{self.prefix}/" if self.prefix else ""

    # --- stores without flexible checksums --------------------------------------------
    @property
    def checksums(self) -> bool:
        """False once the store refused flexible checksums and this storage stopped
        sending them."""
        return self._plain is None

    def _without_checksums(self, exc: ClientError, operation: str, key: str) -> S3Client:
        """Switch to (once) and return the client that sends no flexible checksums."""
        with self._switch:
            if self._plain is None:
                code, status, message = _answer(exc)
                connect, read = self._timeouts
                self._plain = make_client(
                    self._client.meta.endpoint_url,
                    connect_timeout=connect,
                    read_timeout=read,
                    checksums=False,
                )
                self._client = self._plain
                logger.info(
                    "%s does not implement S3 flexible checksums (%s %s: %s %s): "
                    "sending them only where required, as "
                    "AWS_REQUEST_CHECKSUM_CALCULATION=when_required does",
                    self.describe(),
                    operation,
                    key,
                    code or status,
                    self._clean(message)[:_MAX_MESSAGE],
                )
            return self._plain

    def _run(self, operation: str, key: str, call: Callable[[S3Client], T]) -> T:
        """``call(client)``; when the store refuses its flexible checksums, once more
        with the client that sends none; boto3 errors translated (``_error``)."""
        client = self._client
        try:
            return call(client)
        except ClientError as exc:
            if client is self._plain or not checksums_unsupported(exc):
                raise self._error(exc, operation, key) from exc
            plain = self._without_checksums(exc, operation, key)
        except BotoCoreError as exc:
            raise self._error(exc, operation, key) from exc
        try:
            return call(plain)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, operation, key) from exc

    def _upload_args(self, client: S3Client, data: bytes) -> dict[str, Any]:
        """Without flexible checksums, a ``Content-MD5`` lets the store refuse a body
        damaged on the way (``BadDigest``, retried)."""
        if client is not self._plain:
            return {}
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        return {"ContentMD5": base64.b64encode(digest).decode()}

    def _check_etag(self, etag: str, data: bytes, operation: str, key: str) -> None:
        """Without flexible checksums, the ETag of an object from a single PUT is its MD5
        on MinIO, R2, Ceph and S3 alike (not with SSE-KMS, nor after a multipart upload):
        once one object's ETag was its MD5, a body that does not match its ETag was
        damaged on the way (temporary). Before that, nothing is concluded (the repository
        checks every chunk's hash)."""
        etag = etag.strip('"').lower()
        if not _MD5_HEX.fullmatch(etag):
            return
        if hashlib.md5(data, usedforsecurity=False).hexdigest() == etag:
            self._etag_is_md5 = True
        elif self._etag_is_md5:
            raise StorageTransientError(
                f"S3 {operation} {key} on {self.describe()}: the answer did not match its "
                "ETag (MD5)"
            )

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
        """Translate a boto3/botocore exception into the strongroom error tree; a store's
        answer is shown with its own code and message (secrets removed)."""
        where = self.describe()
        if isinstance(exc, ClientError):
            return self._answer_error(exc, operation, key, where)
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

    def _answer_error(self, exc: ClientError, operation: str, key: str, where: str) -> StorageError:
        code, status, message = _answer(exc)
        if code in _NOT_FOUND:
            return ObjectNotFound(f"object {key} not found in {where}")
        message = self._clean(message)
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 1] + "…"
        said = f"{code or status}: {message}" if message else code or str(status)
        if code == "NoSuchBucket":
            endpoint = safe_endpoint(self._client.meta.endpoint_url)
            return StorageError(f"S3 bucket '{self.bucket}' does not exist at {endpoint} ({said})")
        if code in _AUTH or status == 403:
            hint = (
                "check this machine's clock"
                if code == "RequestTimeTooSkewed"
                else "check the access key, secret key and bucket permissions"
            )
            return StorageError(f"S3 refused {operation} {key} on {where}: {said} ({hint})")
        if code in _REDIRECT or status in (301, 307):
            return StorageError(
                f"S3 {operation} {key} on {where} failed: {said} ({self._region_hint(exc)})"
            )
        if code in _PERMANENT_5XX or status in (501, 505):
            tried = "" if self.checksums else ", also without flexible checksums"
            return StorageError(
                f"S3 {operation} {key} on {where} failed: {said} "
                f"(the store does not implement this request{tried})"
            )
        if code in _TRANSIENT or status >= 500 or status == 429:
            return StorageTransientError(
                f"S3 {operation} {key} on {where} failed: {said} (temporary)"
            )
        return StorageError(f"S3 {operation} {key} on {where} failed: {said}")

    def _region_hint(self, exc: ClientError) -> str:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        error: Any = exc.response.get("Error", {})
        bucket_region = str(headers.get("x-amz-bucket-region") or error.get("Region") or "")
        if bucket_region:
            return (
                f"the bucket is in region {self._clean(bucket_region)}, not {region()}: "
                f"set AWS_DEFAULT_REGION={self._clean(bucket_region)}"
            )
        return (
            "the bucket is in another region or at another endpoint: "
            "check AWS_DEFAULT_REGION and the endpoint"
        )

    @staticmethod
    def _clean(text: str) -> str:
        secrets = tuple(os.environ.get(name, "") for name in _SECRET_ENV)
        return " ".join(redact_text(text, secrets).split())

    # --- operations -----------------------------------------------------------------
    def sync(self) -> None:
        """A completed PUT is already durable."""

    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` in one PUT (atomic on S3)."""

        def call(client: S3Client) -> None:
            response = client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, **self._upload_args(client, data)
            )
            if client is self._plain:
                self._check_etag(response.get("ETag", ""), data, "put", key)

        self._run("put", key, call)

    def create(self, key: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``): S3, R2 and MinIO refuse it with 412
        when the object exists."""

        def call(client: S3Client) -> bool:
            try:
                client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    IfNoneMatch="*",
                    **self._upload_args(client, data),
                )
            except ClientError as exc:
                code, status, _ = _answer(exc)
                if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                    409,
                    412,
                ):
                    return False
                raise
            return True

        return self._run("create", key, call)

    def get(self, key: str) -> bytes:
        """Download the whole object, body included (so that a body cut short or damaged
        on the way fails this call, and a retry of it). The object's checksum, when the
        store keeps one, is checked (``FlexibleChecksumError`` on a mismatch); a store
        without flexible checksums is not asked for it: the body is checked against its
        ETag when that is known to be an MD5 (``_check_etag``), and the repository checks
        every chunk's hash."""

        def call(client: S3Client) -> bytes:
            if client is self._plain:
                response = client.get_object(Bucket=self.bucket, Key=self._key(key))
            else:
                response = client.get_object(
                    Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED"
                )
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
            if client is self._plain:
                self._check_etag(response.get("ETag", ""), data, "get", key)
            return data

        return self._run("get", key, call)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """One GET with ``Range: bytes=offset-(offset+length-1)``, body read in full (so
        that a body cut short fails this call and a retry of it, as ``get``). The
        object's checksum is not asked for (it covers the whole object, not the range);
        the repository checks every blob (AEAD tag and chunk hash). A range past the
        object's end (416 ``InvalidRange``) or a shorter answer is a short read."""
        check_range(offset, length)
        if length == 0:
            self._head(key, "get_range")  # ObjectNotFound when missing
            return b""

        def call(client: S3Client) -> bytes:
            try:
                response = client.get_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            except ClientError as exc:
                code, status, _ = _answer(exc)
                if code == "InvalidRange" or status == 416:
                    raise short_read(key, self.describe(), offset, length, 0) from exc
                raise
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
            return data

        data = self._run("get_range", key, call)
        if len(data) != length:
            raise short_read(key, self.describe(), offset, length, len(data))
        return data

    def _head(self, key: str, operation: str) -> int:
        response = self._run(
            operation,
            key,
            lambda client: client.head_object(Bucket=self.bucket, Key=self._key(key)),
        )
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
        with contextlib.suppress(ObjectNotFound):
            self._run(
                "delete",
                key,
                lambda client: client.delete_object(Bucket=self.bucket, Key=self._key(key)),
            )

    def list(self, prefix: str) -> Iterator[str]:
        """Yield keys under ``prefix`` (relative to this storage's prefix) via pagination."""
        for key, _ in self.list_with_times(prefix):
            yield key

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float | None]]:
        """Yield ``(key, modified)`` under ``prefix``: ListObjectsV2 gives each object's
        ``LastModified`` with its key (POSIX seconds; ``None`` if a server leaves it out)."""
        start = len(self._base)

        def first_page(client: S3Client) -> tuple[Any, Iterator[Any]]:
            """The first page is fetched here, so that its refusal can switch clients."""
            pages = iter(
                client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self._key(prefix)
                )
            )
            return next(pages, {}), pages

        page, rest = self._run("list", f"{prefix}*", first_page)
        try:
            while True:
                for item in page.get("Contents", []):
                    name = item.get("Key", "")[start:]
                    if name and not name.endswith("/"):
                        modified = item.get("LastModified")
                        yield name, modified.timestamp() if modified is not None else None
                page = next(rest, None)
                if page is None:
                    return
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", f"{prefix}*") from exc
