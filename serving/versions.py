"""Pusher's numbered version folders, read without TensorFlow (the CLI and load tools list them)."""

from __future__ import annotations

import os


def numbered_versions(model_dir: str) -> list[str]:
    """Version folders, oldest first (only all-digit names, as TF Serving and KServe read them)."""
    if not os.path.isdir(model_dir):
        return []
    names = [n for n in os.listdir(model_dir) if n.isdigit()]
    return sorted(names, key=int)


def fingerprint(path: str) -> tuple:
    """Names, sizes and mtimes of a version folder's files: equal on two polls = fully written.

    Pusher copies a model into its final folder file by file, so a watcher can see a version
    before its variables are complete; loading waits until the folder stopped changing.
    """
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            entries.append(
                (os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns)
            )
    return tuple(sorted(entries))
