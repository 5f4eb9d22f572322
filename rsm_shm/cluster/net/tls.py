"""Mutual TLS for peer-to-peer and client connections.

:class:`TLSConfig` holds one PEM certificate chain, its private key and the CA bundle
that every other party's certificate must chain to.  The same three files serve both
directions: the server side requires and verifies a client certificate (mutual TLS),
the client side presents its certificate and verifies the server's against the CA and
the host name (or IP address) it dials.

Trust model: any holder of a certificate from the cluster's CA is trusted as a member
of the cluster (as etcd's peer certificates are); the peer id a connection claims is
checked against the peers the server knows, not against the certificate.  Give each
cluster its own CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import grpc

__all__ = ["TLSConfig"]


@dataclass(frozen=True)
class TLSConfig:
    """PEM bytes of this party's certificate chain and key, and of the CA to trust."""

    cert_chain: bytes
    private_key: bytes
    root_ca: bytes

    def __post_init__(self) -> None:
        for field, label in ((self.cert_chain, "certificate"), (self.private_key, "key"), (self.root_ca, "CA")):
            if not isinstance(field, bytes) or b"-----BEGIN" not in field:
                raise ValueError(f"TLS {label} must be PEM bytes (with a -----BEGIN line), not {field[:40]!r}")

    @classmethod
    def from_files(cls, cert: str, key: str, ca: str) -> "TLSConfig":
        """Read the three PEM files (``--tls-cert``, ``--tls-key``, ``--tls-ca``)."""
        parts = []
        for path, label in ((cert, "--tls-cert"), (key, "--tls-key"), (ca, "--tls-ca")):
            try:
                with open(path, "rb") as f:
                    parts.append(f.read())
            except OSError as e:
                raise ValueError(f"cannot read the {label} file {path!r}: {e.strerror}") from None
        try:
            return cls(*parts)
        except ValueError as e:
            raise ValueError(f"{e} (files {cert!r}, {key!r}, {ca!r})") from None

    @classmethod
    def from_options(cls, cert: Optional[str], key: Optional[str], ca: Optional[str]) -> Optional["TLSConfig"]:
        """None when no option is given; all three or a ValueError naming what is missing."""
        given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
        if not any(given.values()):
            return None
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise ValueError(f"mutual TLS needs --tls-cert, --tls-key and --tls-ca; missing {', '.join(missing)}")
        return cls.from_files(cert, key, ca)  # type: ignore[arg-type]

    def server_credentials(self) -> "grpc.ServerCredentials":
        """Server side: present our certificate, require and verify the client's."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)], root_certificates=self.root_ca, require_client_auth=True
        )

    def channel_credentials(self) -> "grpc.ChannelCredentials":
        """Client side: verify the server against the CA, present our certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_ca, private_key=self.private_key, certificate_chain=self.cert_chain
        )
