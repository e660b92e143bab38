"""A loopback S3 API server for the tests: moto's server mode, standing in for KFP's MinIO.

Why moto and not a "real" object store: no MinIO server can be installed here, and SeaweedFS (the
real store PyPI has) answers a ranged HEAD with the full length, which breaks tensorflow-io's
reads of SavedModels and checkpoints. moto passes TensorFlow's SavedModel and checkpoint writes
and reads through tensorflow-io, Beam's S3 filesystem (boto3) and boto3 itself. It keeps objects
in memory: a test's store lives as long as its server process.

It listens on 127.0.0.1 only, logs into a folder under the repo's outputs, and stops with the
context manager (or stop()).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Test keys for a throwaway loopback server; nothing secret.
ACCESS_KEY = "shop-test-access"
SECRET_KEY = "shop-test-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    log_path: Path

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def credentials_env(self) -> dict[str, str]:
        """What a Kubernetes Secret would put into a step's environment."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def upload_dir(self, local: str | Path, uri: str) -> int:
        """Copies a folder to s3://bucket/prefix; returns the number of files."""
        bucket, prefix = split_uri(uri)
        client, count = self.client(), 0
        for path in sorted(Path(local).rglob("*")):
            if path.is_file():
                key = "/".join(p for p in [prefix, str(path.relative_to(local))] if p)
                client.upload_file(str(path), bucket, key)
                count += 1
        return count

    def download_prefix(self, uri: str, local_dir: Path) -> int:
        """The launcher's download of an input artifact: the key equal to the prefix becomes a
        file, keys below it a folder; nothing found is no error. Returns the files written."""
        bucket, prefix = split_uri(uri.replace("minio://", "s3://", 1))
        client, count = self.client(), 0
        for key in self.keys(uri.replace("minio://", "s3://", 1)):
            if key != prefix and not key.startswith(prefix + "/"):
                continue  # a sibling with the same leading characters
            relative = key[len(prefix) :].lstrip("/")
            # filepath.Join cleans "sub/" to "sub": a directory-marker key becomes a file
            target = Path(os.path.normpath(local_dir / relative)) if relative else local_dir
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
            count += 1
        return count

    def upload_path(self, local: Path, uri: str) -> int:
        """The launcher's upload of an output: a file to the key, a folder's files below it."""
        local = Path(local)
        if local.is_dir():
            return self.upload_dir(local, uri)
        bucket, key = split_uri(uri.replace("minio://", "s3://", 1))
        self.client().upload_file(str(local), bucket, key)
        return 1

    def keys(self, uri: str) -> list[str]:
        bucket, prefix = split_uri(uri)
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ("bucket", "a/b")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r}: not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.rstrip("/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(log_dir: str | Path, timeout_s: float = 60) -> S3Server:
    """Starts moto's server on a free loopback port; waits until it answers."""
    port = free_port()
    log_path = Path(log_dir) / f"moto-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    moto = Path(sys.executable).with_name("moto_server")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
    server = S3Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}: see {log_path}")
        try:
            urllib.request.urlopen(server.endpoint, timeout=2).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"moto_server did not answer on {server.endpoint} in {timeout_s:.0f}s")


@contextlib.contextmanager
def running(log_dir: str | Path) -> Iterator[S3Server]:
    server = start(log_dir)
    try:
        yield server
    finally:
        server.stop()
