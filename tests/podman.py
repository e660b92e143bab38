"""The project's two container images, built and run with podman on this machine.

No Docker and no image registry here (docs/environment.md): podman runs
rootful with runc, overlay storage and its state under outputs/podman/ (--root/--runroot on the
command line: a custom storage.conf makes every `run --rm` wait 20 s), and a containers.conf with
lowered default ulimits. The python:3.10-slim-bookworm base is a local stand-in: debootstrap's
bookworm minbase plus the slim image's runtime libraries and pyenv's CPython 3.10 in /usr/local.
Only the stand-in trusts the host's CA bundle (builds reach PyPI through a TLS-intercepting
proxy); the Dockerfiles take it as `--build-arg BASE_IMAGE=...` and keep their real base.

Used by the tests (fixtures) and the Makefile (`make container-tools`, `base-image`, `images`):

    python -m tests.podman check | base-image | images | build DOCKERFILE TAG | prune | cmd
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = Path(os.environ.get("SHOP_PODMAN_DIR", ROOT / "outputs" / "podman")).resolve()

BASE_IMAGE = "localhost/python:3.10-slim-bookworm-standin"
PIPELINE_IMAGE = "localhost/shop-ranking:local"
SERVING_IMAGE = "localhost/shop-ranking-serving:local"
# The pipeline Dockerfile's builder stage (the compiled venv), tagged so that pruning keeps it.
BUILDER_IMAGE = "localhost/shop-ranking-builder:local"
PIPELINE_DOCKERFILE = ROOT / "Dockerfile"
SERVING_DOCKERFILE = ROOT / "serving" / "Dockerfile"

PYTHON_VERSION = "3.10"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What python:3.10-slim-bookworm adds to Debian for its CPython (its Dockerfile's runtime deps).
BASE_PACKAGES = (
    "libssl3 libsqlite3-0 libffi8 zlib1g liblzma5 libbz2-1.0 libreadline8 libncursesw6 libuuid1"
    " libgdbm6 libexpat1 ca-certificates tzdata netbase"
).split()
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA_BUNDLE = "/etc/ssl/certs/standin-host-ca-bundle.crt"
# Bump when the recipe changes in a way BASE_PACKAGES and the Python version do not show.
BASE_RECIPE_VERSION = 1
RECIPE_LABEL = "org.shop-ranking.standin.recipe"


def _containers_conf() -> str:
    """containers.conf: runc, cgroupfs, file events and logs, ulimits this process may grant.

    podman's rootful defaults (nofile and nproc 1048576) are refused where the hard limit is lower
    and CAP_SYS_RESOURCE is missing (here: nofile 20000), so they are capped at this process's;
    nproc also at 32768, which podman lowers its own processes to (runc refuses more).
    """
    limits = []
    for name, wanted, rlimit in (
        ("nofile", 65536, resource.RLIMIT_NOFILE),
        ("nproc", 32768, resource.RLIMIT_NPROC),
    ):
        hard = resource.getrlimit(rlimit)[1]
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        limits.append(f'"{name}={value}:{value}"')
    return (
        "# Written by tests/podman.py; podman reads it through CONTAINERS_CONF.\n"
        "[containers]\n"
        f"default_ulimits = [{', '.join(limits)}]\n"
        'log_driver = "k8s-file"\n\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


def conf_path() -> Path:
    """containers.conf under STATE_DIR, (re)written when missing or different."""
    path = STATE_DIR / "containers.conf"
    text = _containers_conf()
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def environment() -> dict[str, str]:
    """The environment podman commands run with: this process's plus CONTAINERS_CONF."""
    return {**os.environ, "CONTAINERS_CONF": str(conf_path())}


def command() -> list[str]:
    """The podman base command: runc, overlay storage and run state under STATE_DIR."""
    return [
        "podman",
        "--root",
        str(STATE_DIR / "storage"),
        "--runroot",
        str(STATE_DIR / "run"),
        "--tmpdir",
        str(STATE_DIR / "libpod-tmp"),
        "--storage-driver",
        "overlay",
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]


def podman(
    *args: str, check: bool = True, timeout: float | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run `podman ARGS` with the base command and environment; output captured as text."""
    kwargs.setdefault("capture_output", "stdout" not in kwargs and "stderr" not in kwargs)
    completed = subprocess.run(
        [*command(), *args], env=environment(), text=True, timeout=timeout, **kwargs
    )
    if check and completed.returncode != 0:
        raise PodmanError(
            f"podman {shlex.join(args[:3])} ... exited with {completed.returncode}:\n"
            f"{(completed.stderr or completed.stdout or '')[-4000:]}"
        )
    return completed


class PodmanError(RuntimeError):
    """A podman command failed."""


def _missing_tools(tools: Iterable[str]) -> list[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [tool for tool in tools if shutil.which(tool, path=path) is None]


@functools.cache
def available() -> str | None:
    """None when podman can run containers here, else a message saying what is missing."""
    if not sys.platform.startswith("linux"):
        return "podman containers need Linux"
    missing = _missing_tools(["podman", "runc"])
    if missing:
        return f"{' and '.join(missing)} not installed (as root: apt-get install -y podman runc)"
    if os.geteuid() != 0:
        return "podman runs rootful here (runc, cgroupfs): run as root"
    try:
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=120)
    except subprocess.TimeoutExpired:
        return "`podman info` did not answer in 120 s"
    if info.returncode != 0:
        return f"`podman info` failed: {info.stderr.strip()[-2000:]}"
    return None


def image_id(tag: str) -> str | None:
    """The id of the local image TAG, or None when there is none."""
    result = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return _plain_id(result.stdout) or None if result.returncode == 0 else None


def _plain_id(text: str) -> str:
    return text.strip().removeprefix("sha256:")


def image_exists(tag: str) -> bool:
    """Whether the local image TAG exists."""
    return podman("image", "exists", tag, check=False).returncode == 0


def python_prefix() -> Path:
    """The CPython 3.10 installation the stand-in copies: $STANDIN_PYTHON_PREFIX or pyenv's."""
    if os.environ.get("STANDIN_PYTHON_PREFIX"):
        return Path(os.environ["STANDIN_PYTHON_PREFIX"])
    try:
        out = subprocess.run(
            ["pyenv", "prefix", PYTHON_VERSION], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise PodmanError(
            f"no CPython {PYTHON_VERSION} for the base image: pyenv install {PYTHON_VERSION}"
            " or set STANDIN_PYTHON_PREFIX"
        ) from error
    return Path(out.splitlines()[0].strip())


def _recipe_key(prefix: Path) -> str:
    recipe = [BASE_RECIPE_VERSION, DEBIAN_SUITE, BASE_PACKAGES, prefix.name]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time across processes (pytest-xdist workers, make): a waiter then finds
    the layers the first one built in its cache."""
    path = STATE_DIR / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_base_image(tag: str = BASE_IMAGE, *, rebuild: bool = False) -> str:
    """The stand-in python:3.10-slim-bookworm (made once, about a minute); returns its id."""
    prefix = python_prefix()
    key = _recipe_key(prefix)
    with _build_lock():
        if not rebuild and image_exists(tag):
            labels = podman("image", "inspect", "--format", "{{json .Labels}}", tag).stdout
            if (json.loads(labels) or {}).get(RECIPE_LABEL) == key:
                return image_id(tag) or ""
            print(f"[podman] {tag} was made by another recipe: making it again", flush=True)
        return _make_base_image(tag, prefix, key)


def _chroot(rootfs: Path, *args: str, log) -> None:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    log.write(f"$ chroot {rootfs} {shlex.join(args)}\n")
    log.flush()
    subprocess.run(["chroot", str(rootfs), *args], env=env, stdout=log, stderr=log, check=True)


def _unmount_below(path: Path) -> None:
    """Unmount what an interrupted debootstrap left mounted in PATH (proc, sys), deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def _remove_rootfs(rootfs: Path) -> None:
    if rootfs.exists():
        _unmount_below(rootfs)
        subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=True)


def _keep_site_package(name: str) -> bool:
    """What of the host interpreter's site-packages the image gets: what the real image has."""
    base = name.split("-")[0].split(".")[0]
    return base in {"pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack", "README"} or (
        name == "distutils-precedence.pth"
    )


def _copy_python(prefix: Path, rootfs: Path) -> None:
    """PREFIX's CPython into /usr/local, its baked-in prefix rewritten to /usr/local."""
    local = rootfs / "usr" / "local"
    stdlib = f"lib/python{PYTHON_VERSION}"

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(prefix).as_posix()
        if relative == f"{stdlib}/site-packages":
            return {name for name in names if not _keep_site_package(name)}
        # As the real image: no test suites, no static libpython.
        dropped = {name for name in names if name.startswith("libpython") and name.endswith(".a")}
        if relative == stdlib or relative.startswith(f"{stdlib}/"):
            dropped |= {"test", "tests", "idle_test"} & set(names)
        return dropped

    for part in ("bin", "include", "lib", "share"):
        if (prefix / part).is_dir():
            shutil.copytree(
                prefix / part, local / part, symlinks=True, ignore=ignore, dirs_exist_ok=True
            )
    old, new = str(prefix).encode(), b"/usr/local"
    texts = [
        *(local / "bin").iterdir(),
        *(local / stdlib).glob("_sysconfigdata_*.py"),
        *(local / stdlib).glob("config-*/Makefile"),
        *(local / "lib" / "pkgconfig").glob("*.pc"),
    ]
    for path in texts:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        data = path.read_bytes()
        if b"\0" not in data[:1024] and old in data:
            path.write_bytes(data.replace(old, new))
    for cached in (local / stdlib / "__pycache__").glob("_sysconfigdata_*.pyc"):
        cached.unlink()
    bin_dir = local / "bin"
    for link, target in {
        "python": f"python{PYTHON_VERSION}",
        "python3": f"python{PYTHON_VERSION}",
        "pip": f"pip{PYTHON_VERSION}",
        "pip3": f"pip{PYTHON_VERSION}",
    }.items():
        if not (bin_dir / link).exists() and (bin_dir / target).exists():
            (bin_dir / link).symlink_to(target)


def _report_unlinked(rootfs: Path, dynload: Path) -> None:
    """Print the interpreter's extension modules whose libraries the image lacks (ldd)."""
    unlinked = []
    for module in sorted(dynload.glob("*.so")):
        inside = f"/{module.relative_to(rootfs)}"
        ldd = subprocess.run(["chroot", str(rootfs), "ldd", inside], capture_output=True, text=True)
        if "not found" in ldd.stdout:
            unlinked.append(module.name.split(".")[0])
    if unlinked:
        print(f"[podman]   modules without their libraries: {', '.join(unlinked)}", flush=True)


def _make_base_image(tag: str, prefix: Path, key: str) -> str:
    missing = _missing_tools(["debootstrap", "chroot", "tar"])
    if missing:
        raise PodmanError(
            f"{', '.join(missing)} needed for the base image (apt-get install -y ...)"
        )
    if os.geteuid() != 0:
        raise PodmanError("making the base image needs root (debootstrap, chroot)")
    if not (prefix / "bin" / f"python{PYTHON_VERSION}").is_file():
        raise PodmanError(f"{prefix} has no bin/python{PYTHON_VERSION}")
    rootfs = STATE_DIR / "base-rootfs"
    cache = STATE_DIR / "debootstrap-cache"
    log_path = STATE_DIR / "base-image.log"
    cache.mkdir(parents=True, exist_ok=True)
    _remove_rootfs(rootfs)
    started = time.perf_counter()
    print(
        f"[podman] making {tag}: debootstrap {DEBIAN_SUITE} minbase (log: {log_path})", flush=True
    )
    with open(log_path, "w") as log:
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--cache-dir={cache}", DEBIAN_SUITE]
                + [str(rootfs), DEBIAN_MIRROR],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
            print(
                f"[podman]   debootstrap done in {time.perf_counter() - started:.0f} s", flush=True
            )
            # The real image's sources: the point release, its updates and the security archive.
            (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
            mirror = DEBIAN_MIRROR.rstrip("/")
            (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
                f"Types: deb\nURIs: {mirror}\nSuites: {DEBIAN_SUITE} {DEBIAN_SUITE}-updates\n"
                "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                f"Types: deb\nURIs: {mirror}-security\nSuites: {DEBIAN_SUITE}-security\n"
                "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )
            shutil.copy2("/etc/resolv.conf", rootfs / "etc/resolv.conf")
            _chroot(rootfs, "apt-get", "update", "-q", log=log)
            _chroot(rootfs, "apt-get", "upgrade", "-y", "-q", log=log)
            _chroot(rootfs, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                    *BASE_PACKAGES, log=log)  # fmt: skip
            _chroot(rootfs, "apt-get", "clean", log=log)
            print(f"[podman]   packages done at {time.perf_counter() - started:.0f} s", flush=True)
            _copy_python(prefix, rootfs)
            local = rootfs / "usr" / "local"
            shutil.copy2(HOST_CA_BUNDLE, rootfs / IMAGE_CA_BUNDLE.lstrip("/"))
            _chroot(rootfs, "ldconfig", log=log)
            sysconfigdata = [
                f"/usr/local/{path.relative_to(local)}"
                for path in (local / f"lib/python{PYTHON_VERSION}").glob("_sysconfigdata_*.py")
            ]
            _chroot(rootfs, "python3", "-m", "compileall", "-q", *sysconfigdata, log=log)
            _chroot(rootfs, "python3", "-c", "import ssl, sqlite3, ctypes, zlib, lzma, bz2, "
                    "readline, curses, uuid, pyexpat, hashlib, decimal, pip", log=log)  # fmt: skip
            _report_unlinked(rootfs, local / f"lib/python{PYTHON_VERSION}/lib-dynload")
            for path in ("etc/resolv.conf", "etc/hostname"):
                (rootfs / path).unlink(missing_ok=True)
            for directory in ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp"):
                for child in (rootfs / directory).glob("*"):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        except subprocess.CalledProcessError as error:
            raise PodmanError(f"making the base image failed: {error} (log: {log_path})") from error
    version = (prefix.name if prefix.name[:1].isdigit() else PYTHON_VERSION).strip()
    changes = [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"ENV PYTHON_VERSION={version}",
        # The stand-in only: trust the host's CA bundle (a TLS-intercepting proxy to PyPI).
        "ENV UV_NATIVE_TLS=1",
        f"ENV SSL_CERT_FILE={IMAGE_CA_BUNDLE}",
        f"ENV PIP_CERT={IMAGE_CA_BUNDLE}",
        f"ENV REQUESTS_CA_BUNDLE={IMAGE_CA_BUNDLE}",
        f"LABEL {RECIPE_LABEL}={key}",
        'CMD ["python3"]',
    ]
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
    )
    args = ["import", "--message", f"stand-in for python:3.10-slim-bookworm ({version})"]
    for change in changes:
        args += ["--change", change]
    imported = podman(*args, "-", tag, stdin=tar.stdout)
    tar.stdout.close()
    if tar.wait() != 0:
        raise PodmanError("tar of the base rootfs failed")
    _remove_rootfs(rootfs)
    print(f"[podman] {tag} made in {time.perf_counter() - started:.0f} s", flush=True)
    return _plain_id(imported.stdout.strip().splitlines()[-1])


# The build output lines worth printing: steps, cache hits, commits (the whole log goes to a file).
PROGRESS = re.compile(r"^(\[\d+/\d+\] )?(STEP \d+/\d+|COMMIT|--> Using cache)")


def build_image(
    dockerfile: str | Path,
    tag: str,
    build_args: Mapping[str, str] | None = None,
    *,
    context: str | Path = ROOT,
    base_image: str = BASE_IMAGE,
    target: str | None = None,
    log_path: str | Path | None = None,
) -> str:
    """Build DOCKERFILE (on the stand-in base unless BASE_IMAGE is given) as TAG; returns its id.

    Layers are cached, so a rebuild only redoes the steps after the first changed input.
    TARGET: build only up to that stage.
    """
    if base_image == BASE_IMAGE:
        ensure_base_image()
    iidfile = STATE_DIR / "iid" / f"{uuid.uuid4().hex}.iid"
    iidfile.parent.mkdir(parents=True, exist_ok=True)
    args = ["build", "-f", str(dockerfile), "-t", tag, "--iidfile", str(iidfile)]
    args += ["--network", "host", "--pull=never", "--layers", "--runtime", "runc"]
    if target:
        args += ["--target", target]
    for key, value in {"BASE_IMAGE": base_image, **(build_args or {})}.items():
        args += ["--build-arg", f"{key}={value}"]
    log_path = Path(log_path or STATE_DIR / "logs" / f"build-{_slug(tag)}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"[podman] building {tag} from {dockerfile} (log: {log_path})", flush=True)
    with _build_lock(), open(log_path, "w") as log:
        process = subprocess.Popen(
            [*command(), *args, str(context)],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if PROGRESS.match(line) or "error" in line.lower():
                print(
                    f"  {time.perf_counter() - started:4.0f} s  {line.rstrip()[:150]}", flush=True
                )
        returncode = process.wait()
    if returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise PodmanError(f"building {tag} failed ({returncode}; log: {log_path}):\n{tail}")
    image = _plain_id(iidfile.read_text())
    iidfile.unlink()
    print(
        f"[podman] {tag} built in {time.perf_counter() - started:.0f} s: {image[:12]}", flush=True
    )
    return image


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


VolumeSpec = str | tuple[str | Path, str] | tuple[str | Path, str, str]


def _container_args(
    *,
    name: str,
    env: Mapping[str, str] | None,
    user: str | None,
    workdir: str | None,
    network: str,
    volumes: Iterable[VolumeSpec],
    entrypoint: str | None,
) -> list[str]:
    args = ["--name", name, "--pull=never", "--network", network]
    # A small init as PID 1 forwards signals (`stop` ends a Python server at once; as PID 1 it
    # would ignore SIGTERM until killed) and reaps worker processes. podman's default init_path.
    if Path("/usr/libexec/podman/catatonit").exists():
        args.append("--init")
    if user:
        args += ["--user", user]
    if workdir:
        args += ["--workdir", workdir]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes:
        if isinstance(volume, str):
            args += ["--volume", volume]
        else:
            source, target, *options = volume
            args += ["--volume", ":".join([str(Path(source).resolve()), target, *options])]
    return args


def run(
    image: str,
    command: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    user: str | None = "10001:10001",
    workdir: str | None = "/app",
    network: str = "host",
    volumes: Iterable[VolumeSpec] = (),
    entrypoint: str | None = None,
    timeout: float | None = None,
    log_path: str | Path | None = None,
) -> subprocess.CompletedProcess:
    """`podman run --rm IMAGE COMMAND`; the image's ENV applies, ENV adds to it.

    The host network (so a server on 127.0.0.1 is reachable); VOLUMES as "SRC:DST[:ro]" or
    (src, dst[, options]). With LOG_PATH, stdout and stderr go there together and come back as
    `stdout`; else both are captured. A command past TIMEOUT is removed and TimeoutExpired raised.
    """
    name = f"shop-run-{uuid.uuid4().hex[:12]}"
    args = [
        *command_args("run", "--rm"),
        *_container_args(
            name=name,
            env=env,
            user=user,
            workdir=workdir,
            network=network,
            volumes=volumes,
            entrypoint=entrypoint,
        ),
        image,
        *command,
    ]
    if log_path is None:
        process = subprocess.Popen(
            args, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stdout, stderr = _communicate(process, name, timeout)
        return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, env=environment(), stdout=log, stderr=subprocess.STDOUT)
        _communicate(process, name, timeout)
    output = Path(log_path).read_text(errors="replace")
    return subprocess.CompletedProcess(args, process.returncode, output, None)


def _communicate(
    process: subprocess.Popen, name: str, timeout: float | None
) -> tuple[str | None, str | None]:
    """Wait for an attached `podman run`; past TIMEOUT remove its container, then raise."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        # Removing the container ends the attached client too (killing only the client would
        # leave the container running under conmon).
        remove(name)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(expired.cmd, expired.timeout, stdout, stderr) from None


def remove(name: str, *, timeout: int = 0) -> None:
    """Remove the container NAME, stopping it first (SIGKILL after TIMEOUT s); gone afterwards."""
    for _ in range(10):
        podman("rm", "--force", "--time", str(timeout), name, check=False)
        if podman("container", "exists", name, check=False).returncode != 0:
            return
        time.sleep(1)
    raise PodmanError(f"container {name} could not be removed")


def command_args(*args: str) -> list[str]:
    """The base command followed by ARGS."""
    return [*command(), *args]


def start(
    image: str,
    command: Sequence[str] = (),
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = "10001:10001",
    workdir: str | None = "/app",
    network: str = "host",
    volumes: Iterable[VolumeSpec] = (),
    entrypoint: str | None = None,
) -> str:
    """Start a long-running container (e.g. the serving image's server) detached; its name.

    COMMAND empty: the image's own CMD. Read its output with logs(), end it with stop().
    """
    name = name or f"shop-{uuid.uuid4().hex[:12]}"
    podman(
        "run",
        "--detach",
        *_container_args(
            name=name,
            env=env,
            user=user,
            workdir=workdir,
            network=network,
            volumes=volumes,
            entrypoint=entrypoint,
        ),
        image,
        *command,
    )
    return name


def running(name: str) -> bool:
    """Whether the container NAME exists and is running."""
    result = podman("container", "inspect", "--format", "{{.State.Running}}", name, check=False)
    return result.returncode == 0 and result.stdout.strip() == "true"


def logs(name: str) -> str:
    """The container's output so far, stdout and stderr interleaved."""
    result = podman("logs", name, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return result.stdout


def stop(name: str, *, timeout: int = 10, log_path: str | Path | None = None) -> str:
    """Stop and remove the container NAME (SIGTERM, SIGKILL after TIMEOUT s); returns its logs."""
    podman("stop", "--time", str(timeout), name, check=False)
    output = logs(name)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(output)
    remove(name)
    return output


def image_size(tag: str) -> int:
    """The image's size in bytes, as `podman images` counts it."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def build_images(
    pipeline_tag: str = PIPELINE_IMAGE, serving_tag: str = SERVING_IMAGE
) -> dict[str, str]:
    """Both images, one after the other (the pipeline's package names PIPELINE_TAG); tag -> id.

    The pipeline's builder stage is tagged too (BUILDER_IMAGE), so prune() keeps its cache.
    """
    build_image(PIPELINE_DOCKERFILE, BUILDER_IMAGE, target="builder")
    return {
        pipeline_tag: build_image(
            PIPELINE_DOCKERFILE, pipeline_tag, {"PIPELINE_IMAGE": pipeline_tag}
        ),
        serving_tag: build_image(SERVING_DOCKERFILE, serving_tag),
    }


def prune() -> None:
    """Remove the images nothing tagged builds on (what earlier builds left); the cache stays."""
    print(podman("image", "prune", "--force").stdout.strip() or "nothing to prune")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.podman", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="say whether podman can run containers here")
    base = commands.add_parser("base-image", help=f"make {BASE_IMAGE} unless it exists")
    base.add_argument("--rebuild", action="store_true")
    images = commands.add_parser("images", help="build the pipeline and the serving image")
    images.add_argument("--pipeline-tag", default=PIPELINE_IMAGE)
    images.add_argument("--serving-tag", default=SERVING_IMAGE)
    build = commands.add_parser("build", help="build one Dockerfile on the stand-in base")
    build.add_argument("dockerfile")
    build.add_argument("tag")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    commands.add_parser("prune", help="remove images left by earlier builds, keep the cache")
    commands.add_parser("cmd", help="print the podman command line, for use in a shell")
    args = parser.parse_args(argv)

    if args.command == "cmd":
        print(shlex.join([f"CONTAINERS_CONF={conf_path()}", *command()]))
        return 0
    problem = available()
    if problem:
        print(f"podman is not usable here: {problem}", file=sys.stderr)
        return 1
    if args.command == "check":
        print(f"podman usable; storage and state in {STATE_DIR}")
    elif args.command == "base-image":
        print(f"{BASE_IMAGE}: {ensure_base_image(rebuild=args.rebuild)[:12]}")
    elif args.command == "build":
        build_args = dict(pair.split("=", 1) for pair in args.build_arg)
        build_image(args.dockerfile, args.tag, build_args)
    elif args.command == "prune":
        prune()
    elif args.command == "images":
        for tag in build_images(args.pipeline_tag, args.serving_tag):
            print(f"{tag}: {image_size(tag) / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PodmanError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
