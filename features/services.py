"""The event stream's services on loopback, for the make targets, tests and benchmarks: RabbitMQ
(the broker) and Redis (Feast's online store), each a child process of its owner with its data and
logs in a folder of its own (under the repo's outputs/services/).

Debian's `rabbitmq-server` command switches to the rabbitmq user and uses /var/lib/rabbitmq; the
package's own scripts (RABBITMQ_BIN) run as the current user with every path, port and the Erlang
cookie given here, so several brokers (tests in parallel) never share anything: each has its own
AMQP, distribution and epmd ports. Standard library only: the main environment imports it too.

Nothing outlives its owner: `__exit__`, `stop()` and an atexit hook stop the services; on Linux the
children also get SIGTERM when the owning process dies (PR_SET_PDEATHSIG: in fact when the
thread that started them ends, so start them from one that outlives them, e.g. the main thread),
and the CLI (`python -m features.services up --root DIR`) stops both on SIGTERM, SIGINT or SIGHUP.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
# Where Debian's rabbitmq-server package keeps its own scripts (rabbitmq-server, rabbitmqctl).
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
PACKAGES = ("rabbitmq-server", "redis-server")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0

_RUNNING: set[_Service] = set()


def missing_packages() -> list[str]:
    """The Debian packages whose programs are not found (epmd comes with rabbitmq's Erlang)."""
    missing = []
    rabbit = [RABBITMQ_BIN / "rabbitmq-server", RABBITMQ_BIN / "rabbitmqctl"]
    if not all(p.is_file() for p in rabbit) or shutil.which("epmd") is None:
        missing.append("rabbitmq-server")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def ensure_installed() -> None:
    """Installs the missing packages with apt-get when root (a fresh Debian), else raises a
    RuntimeError that names them."""
    missing = missing_packages()
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            f"{' and '.join(missing)} not installed (looked for {RABBITMQ_BIN}/rabbitmq-server, "
            f"epmd and redis-server on PATH). Install Debian's packages as root: "
            f"apt-get install -y {' '.join(missing)}"
        )
    print(f"Installing {' '.join(missing)}: {' '.join(command)}", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # A fresh image has no package lists. The postinst may start the system's own services (where
    # an init runs them): those use ports 5672/6379/4369 and /var/lib, ours other ports and folders.
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(command, check=True, env=env)
    if missing_packages():
        raise RuntimeError(f"still missing after apt-get: {' '.join(missing_packages())}")


def free_ports(count: int) -> list[int]:
    """Ports the OS has just handed out on loopback, all different (held open together)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _dies_with_parent():
    """A preexec_fn: the child gets SIGTERM when the thread that started it dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, only called after it
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the owner died before prctl took effect
            os._exit(1)

    return preexec


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own session (a terminal's Ctrl-C reaches the owner, which stops it in
    order), output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_dies_with_parent(),
        )


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(ready, what: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode} while starting; {log}:\n{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s; {log}:\n{log_tail(log)}")
        time.sleep(0.1)


def end_process(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL to the child's whole session when it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class _Service:
    """A context manager that starts on enter and stops on exit, even when starting fails."""

    def start(self) -> _Service:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """Stops and starts again on the same port(s) and data."""
        self.stop()
        self._start()

    def _start(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Broker(_Service):
    """RabbitMQ on 127.0.0.1:`port` (a free one when None), node shop-<port>@localhost, with its
    database, logs, config, Erlang cookie and its own epmd under `root`; no plugins (no
    management). Each start() begins from an empty database; restart() keeps it (durable queues,
    persistent messages)."""

    def __init__(self, root: str | Path, port: int | None = None) -> None:
        self.root = Path(root).resolve()
        others = [p for p in free_ports(3) if p != port]
        self.port, self.dist_port, self.epmd_port = [port, *others[:2]] if port else others
        self.node = f"shop-{self.port}@localhost"
        self.startup_s: float | None = None  # how long the last start took, until AMQP answered
        self._server: subprocess.Popen | None = None
        self._epmd: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/%2F"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def env(self) -> dict[str, str]:
        """The environment of the package's scripts for this node (server and rabbitmqctl)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        r = self.root
        env.update(
            HOME=str(r / "home"),  # the Erlang cookie: never the user's or /var/lib/rabbitmq's
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_ADDRESS=HOST,
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=str(r / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(r / "rabbit.pid"),
            RABBITMQ_CONFIG_FILE=str(r / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(r / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(r / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            RABBITMQ_ENABLED_PLUGINS_FILE=str(r / "enabled_plugins"),
            # The distribution listener on loopback too (it binds every address by default).
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            # rabbitmqctl's own node takes any free port (the default range is 35672-35682).
            RABBITMQ_CTL_DIST_PORT_MIN="0",
            RABBITMQ_CTL_DIST_PORT_MAX="0",
        )
        return env

    def ctl(self, *args: str, timeout_s: float = STOP_TIMEOUT_S) -> str:
        """`rabbitmqctl --quiet ARGS` against this node; its stdout. Raises naming the command."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "--quiet", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def start(self) -> Broker:
        ensure_installed()
        self._check_not_running()
        shutil.rmtree(self.root / "mnesia", ignore_errors=True)
        for sub in ("home", "log", "mnesia"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cookie = self.root / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)
        # guest may only connect from loopback (the default, said here so nobody drops it).
        (self.root / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        self._start()
        return self

    def _check_not_running(self) -> None:
        pid_file = self.root / "rabbit.pid"
        try:
            pid = int(pid_file.read_text().strip())
            # A stale file's pid may belong to another process by now: ours names its root.
            if str(self.root) not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                return
        except (OSError, ValueError):
            return
        raise RuntimeError(f"a broker (pid {pid}, {pid_file}) still runs on {self.root}")

    def _start(self) -> None:
        started = time.monotonic()
        env = self.env()
        self._epmd = spawn(
            ["epmd", "-port", str(self.epmd_port), "-address", HOST], env, self.log_dir / "epmd.log"
        )
        _RUNNING.add(self)
        wait_until(
            lambda: _port_open(self.epmd_port), "epmd", self._epmd, self.log_dir / "epmd.log", 30.0
        )
        out = self.log_dir / "server.out"
        self._server = spawn([str(RABBITMQ_BIN / "rabbitmq-server")], env, out)
        wait_until(
            self._amqp_ready,
            f"RabbitMQ {self.node}",
            self._server,
            self.log_dir / f"{self.node}.log",
            START_TIMEOUT_S,
        )
        self.startup_s = time.monotonic() - started

    def _amqp_ready(self) -> bool:
        """The broker answers the AMQP 0-9-1 protocol header with Connection.Start (frame type
        1 on channel 0): its listener opens only once it has booted."""
        try:
            with socket.create_connection((HOST, self.port), timeout=2.0) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(3)[:3] == b"\x01\x00\x00"
        except OSError:
            return False

    def stop(self) -> None:
        """`rabbitmqctl stop` (a clean shutdown: the database and messages are flushed), SIGTERM
        and then SIGKILL if that fails; then its epmd. Safe to call twice."""
        server = self._server
        if server is not None and server.poll() is None:
            try:
                self.ctl("stop")
                server.wait(STOP_TIMEOUT_S)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"Broker {self.node}: {e}; terminating it", file=sys.stderr, flush=True)
            end_process(server, 30.0)
        end_process(self._epmd, 10.0)
        self._server = self._epmd = None
        _RUNNING.discard(self)

    def __repr__(self) -> str:
        return f"Broker({self.url}, root={self.root})"


class Redis(_Service):
    """redis-server on 127.0.0.1:`port` (a free one when None), its files under `root`, nothing
    persisted (the online store is rebuilt from the lake by materialization)."""

    def __init__(self, root: str | Path, port: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.port = port or free_ports(1)[0]
        self.startup_s: float | None = None
        self._server: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> Redis:
        ensure_installed()
        self.root.mkdir(parents=True, exist_ok=True)
        self._start()
        return self

    def _start(self) -> None:
        started = time.monotonic()
        log = self.root / "redis.log"
        command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", HOST, "--port", str(self.port), "--dir", str(self.root),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--logfile", str(log),
        ]  # fmt: skip
        self._server = spawn(command, dict(os.environ), self.root / "redis.out")
        _RUNNING.add(self)
        wait_until(self._ping, f"redis-server {self.address}", self._server, log, 30.0)
        self.startup_s = time.monotonic() - started

    def _ping(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except (OSError, RuntimeError):
            return False

    def command(self, *args: str):
        """One Redis command over a fresh connection, for readiness and tests (redis_command)."""
        return redis_command(self.address, *args)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then SIGTERM/SIGKILL if it is still there. Safe to call twice."""
        server = self._server
        if server is not None and server.poll() is None:
            try:
                self.command("SHUTDOWN", "NOSAVE")
            except (OSError, RuntimeError):
                pass  # the connection closes without a reply when it works
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                pass
            end_process(server, 10.0)
        self._server = None
        _RUNNING.discard(self)

    def __repr__(self) -> str:
        return f"Redis({self.address}, root={self.root})"


def redis_command(address: str, *args: str, timeout_s: float = 5.0):
    """One command to the Redis at host:port (RESP 2): a str, int, None (a missing value) or a
    list of them; an error reply raises RuntimeError."""
    host, port = address.rsplit(":", 1)
    parts = [a.encode() for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
        s.sendall(request)
        return _read_reply(s.makefile("rb"), address, args[0])


def _read_reply(reply, address: str, command: str):
    line = reply.readline()
    if not line:
        raise OSError(f"{address} closed the connection after {command}")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n").decode(errors="replace")
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis {command}: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reply.read(size + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read_reply(reply, address, command) for _ in range(size)]
    raise RuntimeError(f"redis {command}: unsupported reply {line!r}")


@atexit.register
def _stop_all() -> None:
    for service in list(_RUNNING):
        service.stop()


class _Signalled(Exception):
    pass


def _raise_signal(signum, frame) -> None:
    for other in _STOP_SIGNALS:  # a second signal must not interrupt the orderly stop
        signal.signal(other, signal.SIG_IGN)
    raise _Signalled(signal.Signals(signum).name)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up",
        help="start both, print {broker_url, redis} as JSON, run "
        "until SIGTERM/SIGINT, then stop both",
    )
    up.add_argument("--root", required=True, help="their folder (rabbitmq/ and redis/ in it)")
    up.add_argument("--broker-port", type=int, default=None)
    up.add_argument("--redis-port", type=int, default=None)
    commands.add_parser(
        "install", help="apt-get install the missing packages (root), else name them"
    )
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            ensure_installed()
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        print(f"RabbitMQ ({RABBITMQ_BIN}) and redis-server are installed")
        return 0
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _raise_signal)
    root = Path(args.root)
    try:
        with Broker(root / "rabbitmq", args.broker_port) as broker, \
                Redis(root / "redis", args.redis_port) as redis:  # fmt: skip
            print(json.dumps({"broker_url": broker.url, "redis": redis.address}), flush=True)
            while True:
                signal.pause()
    except _Signalled as e:
        print(f"features.services: {e}, stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
