"""Peers on several hosts: gRPC transport, per-peer gRPC server, TLS (the ``[net]`` extra).

Importing this package (or any module in it) without grpcio installed raises an
ImportError that says ``pip install rsm_shm[net]``; ``import rsm_shm.cluster`` never
needs grpcio.

Modules: ``server`` (:class:`~rsm_shm.cluster.net.server.PeerServer`, the one gRPC server
of a peer process, on which other services register), ``tls``
(:class:`~rsm_shm.cluster.net.tls.TLSConfig`, mutual TLS credentials), ``transport``
(``GrpcTransport``: Raft messages between peers over one long-lived stream per pair).
See docs/cluster-net.md.
"""

from __future__ import annotations

try:
    import grpc as _grpc  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("rsm_shm.cluster.net needs grpcio, which is an optional extra: pip install rsm_shm[net]") from e
