"""Where pushed models lie and how files get there whole: one module for every layer.

- Version folders: Pusher writes each model to `<serving_dir>/<N>/`, N an integer (TF Serving's
  and KServe's layout). Versions are ordered as numbers, so "10" comes after "9"; a name that is
  not all ASCII digits (a temporary folder, a `.DS_Store`) is no version.
- The files inside a version folder, beside the SavedModel: the serving contract and the training
  statistics in `assets.extra/` (copied with the model, ignored by TF Serving), Pusher's records.
- Atomic writes: write a temporary file next to the target, then rename it over the target, so a
  reader (kubectl, a watcher, the next monitor run) sees the old file or the new one, never half
  of one, and a write that crashes leaves the old file as it was.

Standard library only: the model server's environment (serving/requirements.lock, no TFX) and its
image import this module too. Object stores (s3://, gs://) are reached through the functions a
caller passes in (tf.io.gfile, tfx.dsl.io.fileio); this module never imports them.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable
from typing import IO, Any

# --- files inside a version folder ---------------------------------------------------------------

ASSETS_EXTRA = "assets.extra"  # SavedModel's folder for files TF Serving ignores
SERVING_CONTRACT_FILE = "serving_contract.json"  # components/serving_contract.py writes it
TRAINING_STATISTICS_FILE = "training_statistics.pb"  # components/pusher.py copies it
# Paths relative to a version folder, '/'-separated: valid for local paths and object-store URIs.
SERVING_CONTRACT = f"{ASSETS_EXTRA}/{SERVING_CONTRACT_FILE}"
TRAINING_STATISTICS = f"{ASSETS_EXTRA}/{TRAINING_STATISTICS_FILE}"
ASSETS_EXTRA_FILES = (SERVING_CONTRACT, TRAINING_STATISTICS)  # everything we put in assets.extra
# Pusher's records at the top of a version folder (components/pusher.py says what they hold).
PUSHED_FROM = "PUSHED_FROM"
PUSH_RECORD = "PUSH_RECORD.json"


# --- numbered version folders --------------------------------------------------------------------


def is_version(name: str) -> bool:
    """A version folder's name: ASCII digits only (a trailing '/', as listings give it, is fine).

    str.isdigit alone would take '²' or Arabic-Indic digits, which TF Serving does not."""
    name = name.rstrip("/")
    return name.isascii() and name.isdigit()


def numbered(names: Iterable[str]) -> list[str]:
    """The version names among `names` (a directory listing, local or from an object store),
    oldest first: numeric order, trailing '/' dropped, other names left out."""
    versions = {name.rstrip("/") for name in names if is_version(name)}
    return sorted(versions, key=lambda name: (int(name), name))


def newest(names: Iterable[str]) -> str | None:
    """The highest version among `names` (what TF Serving and KServe serve), or None."""
    versions = numbered(names)
    return versions[-1] if versions else None


def local_versions(directory: str | os.PathLike) -> list[str]:
    """numbered() of a local folder's subfolders, oldest first; [] when the folder is missing."""
    try:
        with os.scandir(directory) as entries:
            return numbered(entry.name for entry in entries if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


# --- atomic writes -------------------------------------------------------------------------------


def temporary_path(path: str) -> str:
    """A hidden, unique name beside `path` (same folder, so the rename stays on one filesystem).

    '/'-split rather than os.path, so it holds for object-store URIs too."""
    head, _, tail = str(path).rpartition("/")
    name = f".{tail}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    return f"{head}/{name}" if head else name


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Writes `data` to the local file `path` atomically (temporary file, fsync, rename over).

    The parent folder is created. The file gets the mode a plain open() would (the umask's), not
    mkstemp's 0600: the files are read by other processes (kubectl, a report server)."""
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    temporary = temporary_path(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> str:
    """write_bytes() for text."""
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | os.PathLike, value: Any, **dumps: Any) -> str:
    """write_text() of json.dumps(value, **dumps): e.g. indent=2, sort_keys=True. A value that
    cannot be serialized raises before anything is written."""
    return write_text(path, json.dumps(value, **dumps))


def write_with(
    path: str,
    data: str | bytes,
    *,
    open_file: Callable[[str, str], IO[Any]],
    rename: Callable[[str, str], None],
    makedirs: Callable[[str], None] | None = None,
    remove: Callable[[str], None] | None = None,
) -> str:
    """write_bytes()/write_text() through a filesystem's own functions, for paths that may be
    object-store URIs: `open_file(path, mode)` (e.g. fileio.open, tf.io.gfile.GFile),
    `rename(src, dst)` replacing dst (e.g. functools.partial(fileio.rename, overwrite=True)),
    `makedirs(folder)` and `remove(path)` (to clean up after a failed write) when given.

    On an object store the rename is a copy then a delete: a reader still sees the old object
    or the whole new one."""
    head = path.rpartition("/")[0]
    if makedirs is not None and head:
        makedirs(head)
    temporary = temporary_path(path)
    try:
        with open_file(temporary, "wb" if isinstance(data, bytes) else "w") as handle:
            handle.write(data)
        rename(temporary, path)
    except BaseException:
        if remove is not None:
            try:
                remove(temporary)
            except Exception:  # noqa: BLE001 (never seen: the write itself failed first)
                pass
        raise
    return path
