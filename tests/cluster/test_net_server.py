"""The per-peer gRPC server skeleton and the [net] extra's import contract."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_cluster_imports_without_grpc_and_net_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['grpc'] = None  # as if grpcio were not installed\n"
        "import rsm_shm.cluster\n"
        "from rsm_shm.cluster import LocalCluster, Client\n"
        "try:\n"
        "    import rsm_shm.cluster.net.server\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install rsm_shm[net]" in out.stdout


def test_server_takes_generic_handlers_and_refuses_plaintext_off_loopback():
    grpc = pytest.importorskip("grpc", reason="grpcio (the [net] extra) is not installed")
    from rsm_shm.cluster.net.server import PeerServer, parse_address

    with pytest.raises(ValueError, match="without TLS"):
        PeerServer("0.0.0.0:0")
    assert parse_address("[::1]:5") == ("::1", 5)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("nohost")

    def echo(request, context):
        return request[::-1]

    server = PeerServer("127.0.0.1:0")
    server.add_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)})]
    )
    server.start()
    try:
        with pytest.raises(RuntimeError, match="before start"):
            server.add_handlers([])
        with grpc.insecure_channel(server.address) as ch:
            call = ch.unary_unary("/test.Echo/Call")
            assert call(b"abc", timeout=10) == b"cba"
    finally:
        server.stop()
