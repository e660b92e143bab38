"""Pusher's numbered version folders, on a filesystem or in an object store.

Local folders are read without TensorFlow (the CLI and load tools list them). A URI (s3://, gs://)
is read through TensorFlow's file I/O, with tensorflow-io's S3 filesystem registered for s3://:
the same route the model itself is loaded by, so listing and loading see the same store.
"""

from __future__ import annotations

import os
from typing import Any

from contract import layout


def is_uri(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    """os.path.join for paths, '/'-joined for URIs (a Path would turn s3://b into s3:/b)."""
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else os.path.join(base, *parts)


def remote_fs(uri: str) -> Any:
    """tf.io.gfile, able to open `uri`'s scheme."""
    if uri.startswith("s3://"):
        import tensorflow_io  # noqa: F401 (registers s3://)
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    return remote_fs(path).exists(path) if is_uri(path) else os.path.exists(path)


def read_text(path: str) -> str:
    if is_uri(path):
        with remote_fs(path).GFile(path, "r") as handle:
            return handle.read()
    with open(path) as handle:
        return handle.read()


def numbered_versions(model_dir: str) -> list[str]:
    """Version folders, oldest first, in numeric order (contract/layout.py: all-digit names, as
    TF Serving and KServe read them)."""
    if is_uri(model_dir):
        fs = remote_fs(model_dir)
        return layout.numbered(fs.listdir(model_dir)) if fs.isdir(model_dir) else []
    return layout.local_versions(model_dir)


def newest_version_dir(model_dir: str) -> str:
    """The newest version folder under a Pusher's base folder; FileNotFoundError without one."""
    versions = numbered_versions(model_dir)
    if not versions:
        raise FileNotFoundError(f"{model_dir}: no pushed model version")
    return join(model_dir, versions[-1])


def fingerprint(path: str) -> tuple:
    """Names, sizes and mtimes of a version folder's files: equal on two polls = fully written.

    Pusher copies a model into its final folder file by file, so a watcher can see a version
    before its variables are complete; loading waits until the folder stopped changing.
    """
    entries = []
    if is_uri(path):
        fs = remote_fs(path)
        for root, _, files in fs.walk(path):
            for name in files:
                stat = fs.stat(join(root, name))
                entries.append((join(root, name)[len(path) :], stat.length, stat.mtime_nsec))
        return tuple(sorted(entries))
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            entries.append(
                (os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns)
            )
    return tuple(sorted(entries))
