"""The one gRPC server of a peer process, and address helpers.

A served peer (``rsm-shm cluster serve``) runs one :class:`PeerServer` on its listen
address.  Services register on it before :meth:`PeerServer.start` as gRPC *generic*
handlers (no protobuf: every method takes and returns raw bytes), e.g.::

    server = PeerServer("127.0.0.1:0", tls=None)
    server.add_handlers([grpc.method_handlers_generic_handler("my.Service", {...})])
    server.start()
    print(server.port)

The peer-to-peer Raft stream (``rsm_shm.cluster.net.transport``) is one such service;
the client-facing service is another.

Security: with ``tls`` (a :class:`~rsm_shm.cluster.net.tls.TLSConfig`) the server speaks
only mutual TLS (a plaintext connection fails its handshake; a client certificate from
another CA is refused).  Without TLS it refuses to listen on anything but a loopback
address unless ``insecure=True``: plaintext gRPC on a network interface lets anyone who
reaches the port join the cluster.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from concurrent import futures
from typing import Iterable, List, Optional, Tuple

import grpc

from ..layout import RING_MAX_MESSAGE
from .tls import TLSConfig

__all__ = ["PeerServer", "parse_address", "format_address", "is_loopback", "MAX_GRPC_MESSAGE", "grpc_options"]

log = logging.getLogger("rsm_shm.cluster.net")

# The largest gRPC message either side accepts: one inbox ring message (the largest
# envelope a peer can take) plus framing.  Anything larger is refused by gRPC itself
# (RESOURCE_EXHAUSTED) before it reaches our code.
MAX_GRPC_MESSAGE = RING_MAX_MESSAGE + 4096
_MAX_WORKERS = 64  # one per concurrent stream (peers and clients) plus unary calls
_MAX_CONCURRENT_RPCS = 256


def grpc_options() -> List[Tuple[str, int]]:
    """Channel/server options shared by both sides: message limits, keepalive (a dead
    host is noticed within seconds even when TCP is silent), no port sharing."""
    return [
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
        ("grpc.keepalive_time_ms", 2000),
        ("grpc.keepalive_timeout_ms", 2000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ]


def parse_address(addr: str) -> Tuple[str, int]:
    """``"HOST:PORT"`` or ``"[IPv6]:PORT"`` -> (host, port).  ValueError naming it."""
    if not isinstance(addr, str):
        raise TypeError(f"address must be a 'HOST:PORT' string, not {addr!r}")
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address must be HOST:PORT (port 0-65535), not {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address must be in brackets, [::1]:PORT, not {addr!r}")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only loopback addresses (``localhost`` resolves locally)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class PeerServer:
    """One gRPC server bound to ``listen`` (see the module docstring).

    The port is bound at construction (``listen`` may use port 0: :attr:`port` is the
    one chosen), so a caller can learn it before starting.  Without TLS and without
    ``insecure=True`` a non-loopback ``listen`` address is a ValueError.
    """

    def __init__(
        self, listen: str, *, tls: Optional[TLSConfig] = None, insecure: bool = False, max_workers: int = _MAX_WORKERS
    ) -> None:
        host, port = parse_address(listen)
        if tls is None and not insecure and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {listen!r} without TLS: give --tls-cert/--tls-key/--tls-ca, "
                f"listen on a loopback address, or pass --insecure (anyone who reaches the port could join)"
            )
        self.tls = tls
        self.host = host
        self._started = False
        self._stopped = False
        executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rsm-grpc")
        self._executor: Optional[futures.ThreadPoolExecutor] = executor
        self._server = grpc.server(
            executor,
            options=grpc_options() + [("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=_MAX_CONCURRENT_RPCS,
        )
        target = format_address(host, port)
        try:
            if tls is not None:
                self.port = self._server.add_secure_port(target, tls.server_credentials())
            else:
                self.port = self._server.add_insecure_port(target)
        except RuntimeError as e:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot listen on {listen!r}: {e}") from None
        if not self.port:
            raise OSError(f"cannot listen on {listen!r} (address in use or not local?)")

    @property
    def address(self) -> str:
        """``host:port`` as bound (with the chosen port)."""
        return format_address(self.host, self.port)

    def add_handlers(self, handlers: Iterable["grpc.GenericRpcHandler"]) -> None:
        """Register generic handlers; only before :meth:`start`."""
        if self._started or self._stopped:
            raise RuntimeError(f"PeerServer on {self.address}: register handlers before start()")
        self._server.add_generic_rpc_handlers(tuple(handlers))

    def start(self) -> "PeerServer":
        if self._started or self._stopped:
            raise RuntimeError(f"PeerServer on {self.address} is already started (or stopped)")
        self._started = True
        self._server.start()
        log.info("listening on %s (%s)", self.address, "mutual TLS" if self.tls else "plaintext")
        return self

    def stop(self, grace: Optional[float] = 0.5) -> None:
        """Stop accepting, cancel streams after ``grace`` seconds, wait (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            # A grpc server that bound a port but never started is never released (its
            # core threads outlive it): start it, so that stopping it frees everything.
            self._started = True
            self._server.start()
        self._server.stop(grace).wait()
        # grpc leaves the executor to us: its idle workers would outlive the server.
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        # Let go of grpc's objects now: its core threads run as long as any is alive,
        # and a handle may be kept around after stop().
        self._server = None
        self._executor = None

    def __repr__(self) -> str:
        return f"<rsm_shm.cluster.net.PeerServer {self.address} tls={self.tls is not None}>"
