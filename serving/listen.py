"""Which address the kserve REST server listens on: every interface in a pod, loopback here.

kserve 0.15.2's RESTServer builds its uvicorn config with `host="0.0.0.0"` and takes no host
argument, so a model server or transformer started on a laptop or a CI machine answers the whole
network. `listen_on(host)` sets the host of that config before uvicorn binds it. The local command
lines (serving/commands.py) pass `--http-host 127.0.0.1`; the KServe manifests pass nothing, so a
pod keeps 0.0.0.0, which its Service needs. kserve is pinned (serving/requirements.lock); the e2e
tests read the listening sockets of the local stack from /proc/net/tcp.

The gRPC server (the predictor's `--grpc-port`, off by default) still binds `[::]`: kserve builds
that address inside GRPCServer.start.
"""

from __future__ import annotations

import ipaddress

from kserve.protocol.rest.server import RESTServer

ALL_INTERFACES = "0.0.0.0"


def listen_on(host: str) -> None:
    """Every RESTServer made after this call listens on `host` (an IP address)."""
    ipaddress.ip_address(host)  # a ValueError naming the value, before any port opens
    if host == ALL_INTERFACES:
        return
    original = getattr(RESTServer.__init__, "__wrapped__", RESTServer.__init__)

    def init(self: RESTServer, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        self.config.host = host  # uvicorn.Server reads it from this config object when it binds

    init.__wrapped__ = original  # type: ignore[attr-defined]
    RESTServer.__init__ = init  # type: ignore[method-assign]
