"""Object-store filesystems for TensorFlow, registered by every process that runs step code.

TensorFlow 2.16 reads gs:// itself but has no s3:// filesystem: tensorflow-io registers it on
import. Each entry point that may be handed an s3:// URI (the KFP executor entrypoint, a tuning
trial, a training worker) calls `register_filesystems` with its URIs before TensorFlow opens one,
and ends with `exit_process`.
Beam's own s3:// filesystem comes with apache-beam[aws] and needs nothing here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

_registered: list[str] = []


def register_filesystems(values: Iterable[str]) -> list[str]:
    """Registers what the URIs among `values` need; returns the schemes registered."""
    if any("s3://" in value for value in values if isinstance(value, str)):
        import tensorflow_io  # noqa: F401 (registers s3:// with tf.io.gfile)

        _registered.append("s3")
        return ["s3"]
    return []


def exit_process(code: int) -> None:
    """Ends an entry point. Once tensorflow-io's S3 filesystem was loaded, the AWS SDK's C++
    destructors abort the interpreter's normal exit ("pure virtual method called", SIGABRT, exit
    134) after the work is done (tensorflow/io#1912, unfixed in 0.37.1): then the process leaves
    with os._exit, its output flushed. Otherwise a normal exit."""
    if not _registered:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
