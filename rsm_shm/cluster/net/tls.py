"""Mutual TLS for peer-to-peer and client connections.

:class:`TLSConfig` holds one PEM certificate chain, its private key and the CA bundle
that every other party's certificate must chain to.  The same three files serve both
directions: the server side requires and verifies a client certificate (mutual TLS),
the client side presents its certificate and verifies the server's against the CA and
the host name (or IP address) it dials.

Identities: with mutual TLS, a peer's certificate proves which peer of which cluster
it is, with the URI subject alternative name ``rsm-shm://<cluster name>/peer/<id>``
(:func:`peer_uri`); a served peer accepts a Raft stream only from a certificate that
names the peer id the stream claims (:func:`peer_identity_problem`), and refuses to
start with a certificate that does not name itself.  A client certificate (e.g.
``rsm-shm://<cluster>/client``, :func:`client_uri`) reaches the client service but can
never act as a peer.  :class:`CertificateAuthority` makes such certificates for tests and
trials (docs/cluster-net.md has the openssl recipe).  Give each cluster its own CA
anyway: the identities name the cluster, not its id.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc

__all__ = [
    "TLSConfig",
    "CertificateAuthority",
    "IssuedIdentity",
    "peer_uri",
    "peer_dns_name",
    "client_uri",
    "certificate_uris",
    "peer_identity_problem",
    "names_uri",
]


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

    def names(self, uri: str) -> bool:
        """Whether this party's certificate carries the URI SAN ``uri`` (see :func:`names_uri`)."""
        return names_uri(self.cert_chain, uri)

    def names_dns(self, name: str) -> bool:
        """Whether this party's certificate carries the DNS SAN ``name``."""
        return names_uri(self.cert_chain, name, tag=0x82)

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


# ---------------------------------------------------------------------------- identities
#
# With mutual TLS a peer's id is proven by its certificate, not taken from what a stream
# claims: a peer certificate carries the URI subject alternative name
# ``rsm-shm://<cluster name>/peer/<id>``, a client certificate ``rsm-shm://<cluster
# name>/client`` (or ``.../client/<anything>``, or no rsm-shm URI at all).  gRPC hands the
# verified certificate's URI SANs to the server as the ``peer_uri`` auth property.
URI_SCHEME = "rsm-shm://"


def peer_uri(cluster: str, peer_id: int) -> str:
    """The URI SAN that makes a certificate peer ``peer_id``'s of cluster ``cluster``."""
    return f"{URI_SCHEME}{cluster}/peer/{int(peer_id)}"


def peer_dns_name(cluster: str, peer_id: int) -> str:
    """The DNS SAN by which the others can check that whoever answers at peer
    ``peer_id``'s address is that peer: ``<id>.peer.<cluster>.rsm-shm``."""
    return f"{int(peer_id)}.peer.{cluster}.rsm-shm"


def client_uri(cluster: str, label: str = "") -> str:
    """The URI SAN of a client certificate of ``cluster`` (``label`` names the client)."""
    return f"{URI_SCHEME}{cluster}/client" + (f"/{label}" if label else "")


def certificate_uris(context: Any) -> List[str]:
    """The URI SANs of the certificate the other side of a server call presented (an
    empty list without TLS)."""
    try:
        props = context.auth_context() or {}
    except Exception:  # a context without auth information: no identity
        return []
    return [v.decode("utf-8", "replace") for v in props.get("peer_uri", ())]


def peer_identity_problem(context: Any, cluster: str, peer_id: int) -> Optional[str]:
    """Why the certificate behind server call ``context`` does not prove that its holder is
    peer ``peer_id`` of ``cluster`` (None when it does)."""
    uris = certificate_uris(context)
    if peer_uri(cluster, peer_id) in uris:
        return None
    ours = [u for u in uris if u.startswith(URI_SCHEME)]
    if not ours:
        named = "names no rsm-shm identity (a peer certificate carries the URI SAN "
        return f"the certificate {named}{peer_uri(cluster, peer_id)})"
    return f"the certificate is {', '.join(ours)}, not {peer_uri(cluster, peer_id)}"


def _leaf_der(cert_chain: bytes) -> bytes:
    """The DER bytes of the first certificate of a PEM chain."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    start = cert_chain.find(begin)
    stop = cert_chain.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("the TLS certificate holds no PEM CERTIFICATE block")
    try:
        return base64.b64decode(b"".join(cert_chain[start + len(begin) : stop].split()), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("the TLS certificate's first PEM block is not valid base64") from None


def names_uri(cert_chain: bytes, uri: str, *, tag: int = 0x86) -> bool:
    """Whether the first certificate of the PEM chain ``cert_chain`` carries ``uri`` as a
    URI subject alternative name (a DER GeneralName ``[6] IA5String``; ``tag=0x82``: a
    DNS name, ``[2]``).  The bytes are looked up, not parsed: this only catches a peer
    started with another peer's (or a client's) certificate early, and tells whether
    the cluster's certificates carry DNS identities; the TLS handshakes check them."""
    raw = uri.encode()
    if len(raw) < 128:
        length = bytes([len(raw)])
    elif len(raw) < 256:  # DER's long form
        length = bytes([0x81, len(raw)])
    else:
        raise ValueError(f"identity name {uri[:40]!r}... is too long")
    return bytes([tag]) + length + raw in _leaf_der(cert_chain)


# ---------------------------------------------------------------------------- test PKI
@dataclass(frozen=True)
class IssuedIdentity:
    """A certificate and key issued by a :class:`CertificateAuthority`, with its CA."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def tls_config(self) -> TLSConfig:
        return TLSConfig(self.cert_pem, self.key_pem, self.ca_pem)

    def write(self, directory: str, label: str) -> Dict[str, str]:
        """Write ``LABEL.crt``, ``LABEL.key`` (mode 0600) and ``ca.crt`` into
        ``directory``; the paths as :class:`~rsm_shm.cluster.Peer` keywords
        (``tls_cert``, ``tls_key``, ``tls_ca``)."""
        os.makedirs(directory, exist_ok=True)
        paths = {
            "tls_cert": os.path.join(directory, f"{label}.crt"),
            "tls_key": os.path.join(directory, f"{label}.key"),
            "tls_ca": os.path.join(directory, "ca.crt"),
        }
        for key, data in (("tls_cert", self.cert_pem), ("tls_key", self.key_pem), ("tls_ca", self.ca_pem)):
            fd = os.open(paths[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return paths


class CertificateAuthority:
    """A throw-away CA that issues peer and client certificates with their rsm-shm
    identities, for tests and trials (docs/cluster-net.md shows the openssl recipe for
    real deployments).  Needs the ``cryptography`` package (part of the ``[test]``
    extra); keys are EC P-256, certificates valid for ``days`` days."""

    def __init__(self, common_name: str = "rsm_shm cluster CA", days: int = 30) -> None:
        x509, _oid, hashes, serialization, ec = _crypto()
        self._days = int(days)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(_oid.NameOID.COMMON_NAME, common_name)])
        ku = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # certSign, crlSign
        builder = (
            self._builder(name, self._key.public_key())
            .issuer_name(name)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ku, critical=True)
        )
        self._cert = builder.sign(self._key, hashes.SHA256())
        self._name = name
        self.cert_pem: bytes = self._cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject: Any, public_key: Any) -> Any:
        x509 = _crypto()[0]
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=self._days))
        )

    def issue(self, uris: Sequence[str], hosts: Sequence[str] = (), *, server: bool = True) -> IssuedIdentity:
        """A certificate with subject alternative names ``uris`` (URIs) and ``hosts``
        (IP addresses or DNS names the others dial); ``server``: usable as a server
        certificate too (a peer's), not only as a client's."""
        x509, oid, hashes, serialization, ec = _crypto()
        key = ec.generate_private_key(ec.SECP256R1())
        sans: List[Any] = [x509.UniformResourceIdentifier(u) for u in uris]
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        if not sans:
            raise ValueError("a certificate needs at least one identity URI or host")
        usages = [oid.ExtendedKeyUsageOID.CLIENT_AUTH] + ([oid.ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        cn = uris[0] if uris else hosts[0]
        subject = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, cn[:64])])
        cert = (
            self._builder(subject, key.public_key())
            .issuer_name(self._name)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return IssuedIdentity(cert.public_bytes(serialization.Encoding.PEM), key_pem, self.cert_pem)

    def issue_peer(
        self, cluster: str, peer_id: int, hosts: Sequence[str] = ("127.0.0.1", "localhost")
    ) -> IssuedIdentity:
        """Peer ``peer_id`` of ``cluster``, reachable at ``hosts``, with both identities:
        the URI (checked by the peers it connects to) and the DNS name (checked by the
        peers that connect to it)."""
        return self.issue([peer_uri(cluster, peer_id)], [*hosts, peer_dns_name(cluster, peer_id)])

    def issue_client(self, cluster: str, label: str = "") -> IssuedIdentity:
        """A client of ``cluster`` (it can use the client service, never act as a peer)."""
        return self.issue([client_uri(cluster, label)], server=False)


def _crypto() -> Tuple[Any, Any, Any, Any, Any]:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509 import oid
    except ImportError:
        raise ImportError(
            "rsm_shm.cluster.net.tls.CertificateAuthority needs the cryptography package "
            "(pip install 'rsm_shm[test]' or pip install cryptography)"
        ) from None
    return x509, oid, hashes, serialization, ec
