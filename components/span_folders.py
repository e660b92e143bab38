"""Span folders (`span-N/` under the data root) and whether each holds a complete span.

Shared by the local span selection (pipelines/spans.py) and the Kubeflow ExampleGen step
(components/span_example_gen.py), so both runners refuse the same folders with the same words.

A span is the first path component of the file pattern with `{SPAN}` filled in (`span-3` for
`span-{SPAN}/*.csv`); it *exists* when an entry of that name is under the root, whatever it holds.
An existing span is *usable* only when it is complete, as far as the data layout can tell without
reading whole files:

- at least one file matches the pattern (an empty folder, or one whose files do not match, is not
  a span yet: an upload or export that has not started or not finished);
- no matching file is empty (0 bytes) or holds only its CSV header (no rows);
- no file of the folder is still being written: shop-sim (simulator/generate.py) writes each file
  as `.<name>.partial` and renames it when complete, so such a file means a write in progress.

Row counts are not compared with anything: the pipeline runs on data the simulator did not write
(no manifest), and counting would read every file. Checking a span reads at most the first two
lines of each of its files; `span_entries` only lists the root.
"""

from __future__ import annotations

import re

import tensorflow as tf

IN_PROGRESS_SUFFIX = ".partial"  # shop-sim's temporary name: .<file>.partial, renamed when done


def span_entries(root: str, file_pattern: str) -> dict[int, str]:
    """span -> path of every entry under `root` named like the pattern's span component."""
    first = file_pattern.split("/")[0]
    prefix, marker, suffix = first.partition("{SPAN}")
    if not marker:  # {SPAN} only in a deeper component: not a layout spans are read from
        return {}
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    found = {}
    for entry in tf.io.gfile.listdir(root):
        match = pattern.match(entry.rstrip("/"))
        if match:
            found[int(match.group(1))] = _join(root, entry.rstrip("/"))
    return found


def span_files(root: str, file_pattern: str, span: int) -> list[str]:
    return sorted(tf.io.gfile.glob(_join(root, file_pattern.replace("{SPAN}", str(span)))))


def span_problem(root: str, file_pattern: str, span: int) -> str | None:
    """Why span `span` under `root` is not a complete span (None: it is). The text follows the
    span's path, e.g. "has no file matching span-{SPAN}/*.csv (empty folder)"."""
    entry = _join(root, file_pattern.split("/")[0].replace("{SPAN}", str(span)))
    files = span_files(root, file_pattern, span)
    if tf.io.gfile.isdir(entry):
        names = [name.rstrip("/") for name in tf.io.gfile.listdir(entry)]
        writing = sorted(name for name in names if name.endswith(IN_PROGRESS_SUFFIX))
        if writing:
            return f"is still being written ({', '.join(writing)})"
        if not files:
            held = f"holds only {', '.join(sorted(names))}" if names else "empty folder"
            return f"has no file matching {file_pattern} ({held})"
    elif not files:
        return f"has no file matching {file_pattern}"
    for path in files:
        problem = _file_problem(path)
        if problem:
            return f"has {path[len(entry) :].lstrip('/') or path} {problem}"
    return None


def _file_problem(path: str) -> str | None:
    if tf.io.gfile.stat(path).length == 0:
        return "empty (0 bytes)"
    with tf.io.gfile.GFile(path, "r") as handle:
        lines = 0
        for line in handle:
            if line.strip():
                lines += 1
                if lines == 2:
                    return None
    return "with a header and no rows"


def _join(root: str, *parts: str) -> str:
    """'/'-joined (a pathlib.Path would turn s3://bucket into s3:/bucket)."""
    return "/".join([root.rstrip("/"), *parts])
