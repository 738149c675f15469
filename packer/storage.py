"""Object storage: `s3://bucket/prefix` URLs, one client configured as the AWS tools are, and
requests that survive the faults a store is expected to have.

- **Configuration.** botocore's standard chain finds the credentials (environment, `~/.aws/config`
  and `credentials` files, `AWS_PROFILE`, instance roles) and `AWS_ENDPOINT_URL` points it at an
  S3-compatible store. `--storage-options JSON` takes the keys s3fs (and so `datasets` and fsspec)
  takes: `key`, `secret`, `token`, `profile`, `endpoint_url`, `client_kwargs`, `config_kwargs`; the
  same dict reads the published pack back.
- **Faults.** Throttling (503 SlowDown), 5xx answers, connection resets and timeouts are retried
  with exponential backoff and full jitter, at most `Retry.attempts` times; anything else (403, no
  such bucket, a refused endpoint) is permanent: `StorageError` at once, one line naming the URL.
- **Proof.** A file is hashed once (SHA-256, and MD5 per part), sent with its Content-MD5, which the
  store checks as it receives it, and its ETag (the MD5 the store computed, or its multipart form)
  and size are compared after upload. A multipart upload that fails is aborted.
- **No credential leaks.** Messages name `s3://bucket/key` and the store's error code, never a key
  or secret; a URL or endpoint holding credentials (`user:pass@`) is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import InputError, OutputError
from .guard import inert
from .shards import open_regular


def _botocore() -> Any:
    """botocore, imported on first use: a pack without --publish never pays its 0.2 s import."""
    import botocore.config
    import botocore.exceptions
    import botocore.session

    return botocore


def client_error() -> type[Exception]:
    """botocore's ClientError: an answer of the store (412 on a conditional write, 404...)."""
    return _botocore().exceptions.ClientError


SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# s3fs's storage_options keys that mean the same here.
OPTION_KEYS = ("key", "secret", "token", "profile", "endpoint_url", "client_kwargs", "config_kwargs")
PART_SIZE = 64 << 20  # files above this go up in parts of this size (S3's smallest part: 5 MiB)
MIN_PART_SIZE = 5 << 20
DEFAULT_REGION = "us-east-1"  # where no region is configured (S3-compatible stores mostly ignore it)
# Errors a store answers when it is busy or briefly broken: tried again.
RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",  # the bytes were damaged on the way: sent again (a file changed under us fails after the last try)
    "XAmzContentSHA256Mismatch",
}
CONTENT_TYPES = {
    ".tar": "application/x-tar",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".parquet": "application/vnd.apache.parquet",
    ".html": "text/html; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".yaml": "application/yaml",
}


class StorageError(OutputError):
    """The store refused or kept failing a request (exit 3): one line naming the URL."""


def is_url(text: object) -> bool:
    return isinstance(text, str) and bool(SCHEME.match(text))


@dataclass(frozen=True)
class ObjectUrl:
    """`s3://bucket/prefix`: a prefix is a folder of objects (`prefix/` and below)."""

    bucket: str
    prefix: str  # no leading or trailing slash; "" is the whole bucket

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def of(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_url(text: str) -> ObjectUrl:
    """An `s3://bucket/prefix` URL, or InputError naming what is wrong (never echoing credentials)."""
    parts = urlsplit(text)
    if parts.scheme != "s3":
        raise InputError(f"{inert(text)}: not an s3://bucket/prefix URL (S3 and S3-compatible stores are supported)")
    if "@" in parts.netloc:
        raise InputError(
            "s3:// URL with credentials in it refused: give them by the AWS chain or --storage-options, never in a URL"
        )
    if not BUCKET.fullmatch(parts.netloc):
        raise InputError(f"{inert(text)}: {inert(parts.netloc)!s} is not a valid bucket name")
    if parts.query or parts.fragment:
        raise InputError(f"{inert(text)}: a bucket prefix has no ?query or #fragment")
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments) or any(c in parts.path for c in "\\\x00"):
        raise InputError(f"{inert(text)}: the prefix may not hold '.', '..' or backslashes")
    return ObjectUrl(parts.netloc, "/".join(segments))


def parse_options(text: str | None) -> dict[str, Any]:
    """`--storage-options JSON`: a JSON object of s3fs's keys, or InputError."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--storage-options: not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(options, dict):
        raise InputError('--storage-options: a JSON object is expected, e.g. \'{"endpoint_url": "http://..."}\'')
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise InputError(f"--storage-options: unknown key {inert(unknown[0])!r} (known: {', '.join(OPTION_KEYS)})")
    for name in ("client_kwargs", "config_kwargs"):
        if not isinstance(options.get(name, {}), dict):
            raise InputError(f"--storage-options: {name} must be a JSON object")
    endpoint = options.get("endpoint_url") or options.get("client_kwargs", {}).get("endpoint_url")
    if endpoint is not None and (not isinstance(endpoint, str) or "@" in urlsplit(endpoint).netloc):
        raise InputError("--storage-options: endpoint_url must be a URL without credentials in it")
    return options


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with full jitter: try n waits up to min(cap, base * 2**n) seconds."""

    attempts: int = 8
    base: float = 0.1
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


@dataclass(frozen=True)
class FileDigest:
    """A file as it will be published: size, SHA-256, the MD5 of each part (one part below the
    part size) and the ETag a store gives those parts."""

    size: int
    sha256: str
    part_md5: tuple[bytes, ...]

    @property
    def etag(self) -> str:
        if len(self.part_md5) == 1:
            return self.part_md5[0].hex()
        return f"{hashlib.md5(b''.join(self.part_md5)).hexdigest()}-{len(self.part_md5)}"


def digest_file(path: Path, part_size: int = PART_SIZE) -> FileDigest:
    """One read of the file: its SHA-256 and each part's MD5 (hashlib releases the GIL)."""
    fd = open_regular(path)
    sha, parts, size = hashlib.sha256(), [], 0
    try:
        while True:
            block = os.read(fd, part_size)
            if not block and parts:
                break
            sha.update(block)
            parts.append(hashlib.md5(block).digest())
            size += len(block)
            if len(block) < part_size:
                break
    finally:
        os.close(fd)
    return FileDigest(size, sha.hexdigest(), tuple(parts))


@dataclass
class Counters:
    """What the requests met (thread-safe): retries by cause."""

    retries: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def retried(self, cause: str) -> None:
        with self.lock:
            self.retries[cause] = self.retries.get(cause, 0) + 1


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or (str(status) if status else type(exc).__name__)


def _status(exc: Exception) -> int | None:
    return (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")


def is_retryable(exc: Exception) -> bool:
    """A fault worth another try: throttling, a 5xx, a reset or a timeout."""
    e = _botocore().exceptions
    if isinstance(exc, e.ClientError):
        status = _status(exc)
        return _code(exc) in RETRYABLE_CODES or (status is not None and status >= 500)
    transient = (
        e.ConnectionClosedError,
        e.ReadTimeoutError,
        e.ConnectTimeoutError,
        e.ResponseStreamingError,
        e.IncompleteReadError,
        e.EndpointConnectionError,
        ConnectionError,
        TimeoutError,
    )
    return isinstance(exc, transient) or type(exc).__name__ in ("ProtocolError", "ProxyConnectionError")


def describe(exc: Exception) -> str:
    """The store's error code and message, or the connection fault, on one line."""
    if isinstance(exc, _botocore().exceptions.ClientError):
        message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message") or ""
        return inert(f"{_code(exc)}: {message}".strip().rstrip(":"))[:300]
    return inert(f"{type(exc).__name__}: {exc}")[:300]


class Store:
    """One bucket prefix and a botocore client (thread-safe) with packer's retry rule.

    `reachable` says whether a request has reached the store yet: until one has, a refused
    connection is a bad endpoint (permanent); afterwards it is a fault (retried)."""

    def __init__(self, url: ObjectUrl, options: dict[str, Any] | None = None, retry: Retry | None = None):
        self.url = url
        self.retry = retry or Retry()
        self.counters = Counters()
        self.reachable = False
        options = dict(options or {})
        session = _botocore().session.get_session()
        if options.get("profile"):
            session.set_config_variable("profile", options["profile"])
        client_kwargs = dict(options.get("client_kwargs", {}))
        config_kwargs = {
            "connect_timeout": 10,
            "read_timeout": 60,
            "max_pool_connections": 32,
            # packer retries itself (counted, with its own bound); botocore tries once.
            "retries": {"total_max_attempts": 1},
            # Content-MD5 is the checksum every S3-compatible store checks; the newer CRC trailers are not.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            **options.get("config_kwargs", {}),
        }
        if "s3" not in config_kwargs and (options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")):
            config_kwargs["s3"] = {"addressing_style": "path"}  # S3-compatible stores rarely serve bucket subdomains
        try:
            config = _botocore().config.Config(**config_kwargs)
            region = client_kwargs.pop("region_name", None) or session.get_config_variable("region") or DEFAULT_REGION
            self.client = session.create_client(
                "s3",
                region_name=region,
                endpoint_url=options.get("endpoint_url") or client_kwargs.pop("endpoint_url", None),
                aws_access_key_id=options.get("key"),
                aws_secret_access_key=options.get("secret"),
                aws_session_token=options.get("token"),
                config=config,
                **client_kwargs,
            )
        except (TypeError, ValueError, _botocore().exceptions.BotoCoreError) as exc:
            raise InputError(f"{url}: the storage client cannot be made: {describe(exc)}") from None

    # -- requests ---------------------------------------------------------------------------------

    def call(self, operation: str | Callable[[], Any], relative: str | None, **kwargs: Any) -> Any:
        """`client.<operation>(**kwargs)` (or a function of no arguments that makes its request and
        reads its answer), retried by the rule; StorageError when it cannot succeed. `relative`
        names the object (None: the prefix) in messages."""
        method: Callable[..., Any] = getattr(self.client, operation) if isinstance(operation, str) else operation
        name = operation if isinstance(operation, str) else "get_object"
        where = self.url.of(relative) if relative is not None else str(self.url)
        for attempt in range(self.retry.attempts):
            try:
                result = method(**kwargs)
                self.reachable = True
                return result
            except Exception as exc:
                errors = _botocore().exceptions
                if isinstance(exc, errors.ClientError):
                    self.reachable = True
                    if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
                        raise  # an answer, not a fault: the caller decides
                refused = isinstance(exc, errors.EndpointConnectionError) and not self.reachable
                if not isinstance(exc, errors.BotoCoreError | errors.ClientError | OSError):
                    raise
                if refused or not is_retryable(exc) or attempt == self.retry.attempts - 1:
                    tries = f" after {attempt + 1} tries" if attempt else ""
                    raise StorageError(f"{where}: {name} failed{tries}: {describe(exc)}") from None
                self.counters.retried(_code(exc))
                time.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    def listing(self) -> dict[str, tuple[int, str]]:
        """relative key -> (size, ETag without quotes), for every object under the prefix."""
        out: dict[str, tuple[int, str]] = {}
        kwargs: dict[str, Any] = {"Bucket": self.url.bucket, "Prefix": self.url.key("")}
        while True:
            page = self.call("list_objects_v2", None, **kwargs)
            for obj in page.get("Contents", []):
                out[self.url.relative(obj["Key"])] = (int(obj["Size"]), obj["ETag"].strip('"'))
            if not page.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def head(self, relative: str) -> dict[str, Any] | None:
        try:
            return self.call("head_object", relative, Bucket=self.url.bucket, Key=self.url.key(relative))
        except _botocore().exceptions.ClientError:  # 404: absent
            return None

    def read(
        self,
        relative: str,
        start: int | None = None,
        size: int | None = None,
        *,
        limit: int | None = None,
        if_match: str | None = None,
    ) -> tuple[bytes, dict[str, Any]] | None:
        """An object's bytes, or `size` bytes from `start` (one ranged read), or no more than
        `limit` + 1 of them; and the store's answer (ETag, LastModified, ContentLength...). None when
        absent, or with `if_match` (an ETag) no longer that version."""
        kwargs: dict[str, Any] = {"Bucket": self.url.bucket, "Key": self.url.key(relative)}
        if start is not None and size is not None:
            kwargs["Range"] = f"bytes={start}-{start + size - 1}"
        if if_match is not None:
            kwargs["IfMatch"] = f'"{if_match}"'

        def request() -> tuple[bytes, dict[str, Any]]:
            answer = self.client.get_object(**kwargs)
            body = answer.pop("Body")
            try:
                return (body.read(limit + 1) if limit is not None else body.read()), answer
            finally:
                body.close()

        try:
            data, answer = self.call(request, relative)
        except _botocore().exceptions.ClientError:
            return None
        if size is not None and len(data) != size:
            raise StorageError(f"{self.url.of(relative)}: {len(data)} bytes read where {size} were asked for")
        return data, answer

    def get(self, relative: str, start: int | None = None, size: int | None = None) -> tuple[bytes, str] | None:
        """(bytes, ETag) of an object, or of `size` bytes from `start` (one ranged read); None when absent."""
        found = self.read(relative, start, size)
        return (found[0], found[1]["ETag"].strip('"')) if found is not None else None

    def put(
        self,
        relative: str,
        body: bytes,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        md5: bytes | None = None,
    ) -> str:
        """Put an object whole, with its Content-MD5 (`md5`, else computed), which the store checks;
        returns its ETag."""
        kwargs: dict[str, Any] = {
            "Bucket": self.url.bucket,
            "Key": self.url.key(relative),
            "Body": body,
            "ContentMD5": base64.b64encode(md5 or hashlib.md5(body).digest()).decode(),
            "ContentType": content_type(relative),
            "Metadata": metadata or {},
        }
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        return self.call("put_object", relative, **kwargs)["ETag"].strip('"')

    def delete(self, relative: str, if_match: str | None = None) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.url.bucket, "Key": self.url.key(relative)}
        if if_match:
            kwargs["IfMatch"] = f'"{if_match}"'
        try:
            self.call("delete_object", relative, **kwargs)
        except _botocore().exceptions.ClientError:
            pass  # already gone (404), or no longer the object we meant (412): not ours to remove

    def upload(self, relative: str, path: Path, digest: FileDigest, part_size: int = PART_SIZE) -> None:
        """Send a file as `digest` describes it: whole, or in parts of `part_size` (each with its
        Content-MD5, which the store checks on receipt); a multipart upload that fails is aborted.
        The ETag the store answers must be the digest's (StorageError otherwise); the caller checks
        size and ETag once more from a listing (`verify_listed`)."""
        metadata = {"packer-sha256": digest.sha256}
        fd = open_regular(path)
        try:
            if len(digest.part_md5) == 1:
                body = os.pread(fd, digest.size + 1, 0)
                if len(body) != digest.size:
                    raise StorageError(f"{self.url.of(relative)}: the local file changed while publishing: rerun")
                # The digest's MD5, not the bytes read now: a file changed since is refused by the store.
                etag = self.put(relative, body, metadata, md5=digest.part_md5[0])
            else:
                etag = self._multipart(relative, fd, digest, metadata, part_size)
        finally:
            os.close(fd)
        if etag != digest.etag:
            raise StorageError(
                f"{self.url.of(relative)}: the store answered ETag {inert(etag)} where {digest.etag} was sent "
                "(changed while publishing?): rerun"
            )

    def _multipart(self, relative: str, fd: int, digest: FileDigest, metadata: dict[str, str], part_size: int) -> str:
        key = self.url.key(relative)
        started = self.call(
            "create_multipart_upload",
            relative,
            Bucket=self.url.bucket,
            Key=key,
            ContentType=content_type(relative),
            Metadata=metadata,
        )
        upload_id = started["UploadId"]
        try:
            parts = []
            for number, md5 in enumerate(digest.part_md5, start=1):
                body = os.pread(fd, part_size, (number - 1) * part_size)
                answer = self.call(
                    "upload_part",
                    relative,
                    Bucket=self.url.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentMD5=base64.b64encode(md5).decode(),
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            try:
                done = self.call(
                    "complete_multipart_upload",
                    relative,
                    Bucket=self.url.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except StorageError:
                # A completion whose answer was lost is retried into "no such upload": the object
                # may well be complete. It is, when the store holds the digest's bytes.
                head = self.head(relative)
                if head is not None and head["ETag"].strip('"') == digest.etag:
                    return digest.etag
                raise
            return str(done["ETag"]).strip('"')
        except BaseException:
            self.abort(relative, upload_id)
            raise

    def abort(self, relative: str, upload_id: str) -> None:
        """Abort a multipart upload (its parts are freed); a failure to do so is reported, not raised."""
        try:
            self.call(
                "abort_multipart_upload",
                relative,
                Bucket=self.url.bucket,
                Key=self.url.key(relative),
                UploadId=upload_id,
            )
        except (StorageError, _botocore().exceptions.ClientError) as exc:
            print(f"packer: could not abort the multipart upload of {self.url.of(relative)}: {inert(exc)}")

    def unfinished_uploads(self) -> list[tuple[str, str]]:
        """(relative key, upload id) of every multipart upload under the prefix never completed."""
        out, kwargs = [], {"Bucket": self.url.bucket, "Prefix": self.url.key("")}
        while True:
            page = self.call("list_multipart_uploads", None, **kwargs)
            out += [(self.url.relative(u["Key"]), u["UploadId"]) for u in page.get("Uploads", []) or []]
            if not page.get("IsTruncated"):
                return out
            kwargs.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])

    def verify_listed(self, digests: dict[str, FileDigest]) -> None:
        """After upload: the store lists every object with `digest.size` bytes and the digest's ETag
        (the MD5 it computed), one listing request per 1,000 objects."""
        listed = self.listing()
        for relative, digest in sorted(digests.items()):
            found = listed.get(relative)
            if found is None:
                raise StorageError(f"{self.url.of(relative)}: absent right after its upload: rerun")
            if found != (digest.size, digest.etag):
                raise StorageError(
                    f"{self.url.of(relative)}: the store holds {found[0]} bytes with ETag {inert(found[1])}, where "
                    f"{digest.size} bytes with ETag {digest.etag} were sent (changed while publishing?): rerun"
                )


def content_type(relative: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(relative)[1], "application/octet-stream")


def store_for(url: str, options_json: str | None) -> Store:
    """The Store of a URL and `--storage-options` text (InputError for either)."""
    return Store(parse_url(url), parse_options(options_json))
