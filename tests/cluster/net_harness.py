"""Served peers (``rsm_shm.cluster.Peer``) on 127.0.0.1, each its own process with its
own port, behind the same fault-injection interface as a LocalCluster, so the fault
suites' schedules and checks run over gRPC unchanged.

Raft traffic between the peers goes over gRPC only (every peer names the others by
address); the test clients are local ``Client(NAME)`` processes, which reach the leader
through its inbox ring on this host.  Kill, restart, pause and resume act on the peer
processes; partition, heal and the drop rate go through the host's control block (the
link table every served peer applies to its gRPC sends).
"""

from __future__ import annotations

import socket
import time

from rsm_shm.cluster import LocalCluster, Peer
from rsm_shm.cluster.control import PEER_KILLED, PEER_PAUSED, PEER_RUNNING, set_slot


def free_ports(n: int) -> list:
    """``n`` distinct ports the kernel just handed out on 127.0.0.1 (bound together, so
    distinct; closed before use: another process could take one in between, which
    shows as a start failure naming the address)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServedCluster:
    """``n`` served peers of cluster ``name`` on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        name: str,
        state_machine: str,
        n: int,
        data_root,
        *,
        tls: dict | None = None,
        fsync: bool = False,
        peer_timing: dict | None = None,
        **timing,
    ):
        """``peer_timing``: ``{peer id: timing options}`` that override ``timing`` for
        that peer (e.g. a peer whose election timeout is much longer than the others')."""
        self.name = name
        ports = free_ports(n)
        self.addresses = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        self.peers = {}
        for pid, addr in self.addresses.items():
            others = {q: a for q, a in self.addresses.items() if q != pid}
            files = (tls or {}).get(pid, {})
            self.peers[pid] = Peer(
                name,
                pid,
                listen=addr,
                peers=others,
                state_machine=state_machine,
                data_dir=str(data_root / f"peer{pid}"),
                fsync=fsync,
                **files,
                **{**timing, **(peer_timing or {}).get(pid, {})},
            )
        self._attached = None
        self._spec = dict(state_machine=state_machine, data_root=data_root, fsync=fsync, timing=timing)

    def start_joining(self, pid: int, tls_files: dict | None = None) -> Peer:
        """Start a new peer ``pid`` on a fresh port that joins through the running peers
        (``--join``); it waits to be admitted (``rsm_shm.cluster.net.members.add_peer``)."""
        spec = self._spec
        addr = f"127.0.0.1:{free_ports(1)[0]}"
        peer = Peer(
            self.name,
            pid,
            listen=addr,
            join=list(self.addresses.values()),
            state_machine=spec["state_machine"],
            data_dir=str(spec["data_root"] / f"peer{pid}"),
            fsync=spec["fsync"],
            **(tls_files or {}),
            **spec["timing"],
        )
        self.peers[pid] = peer
        self.addresses[pid] = addr
        peer.start()
        return peer

    def start(self) -> "ServedCluster":
        try:
            for p in self.peers.values():
                p.start()
            self._attached = LocalCluster.attach(self.name)
        except BaseException:
            self.destroy()
            raise
        return self

    @property
    def local(self) -> LocalCluster:
        """The host's view (status records, link table) as a LocalCluster handle."""
        return self._attached

    # -- what the fault schedules use ---------------------------------------------------
    def status(self):
        return self.local.status()

    def leader(self):
        return self.local.leader()

    def wait_leader(self, timeout: float = 10.0) -> int:
        return self.local.wait_leader(timeout)

    def client(self):
        return self.local.client()

    def transfer_leadership(self, to: int, timeout: float = 5.0) -> None:
        self.local.transfer_leadership(to, timeout)

    def _slot(self, peer: int, state: int) -> None:
        p = self.peers[peer]
        from rsm_shm import _proc

        pid = p.pid if state != PEER_KILLED else 0
        start = _proc.start_time(pid) if pid else 0
        self.local._ctl.update(lambda rec: set_slot(rec, peer, state, pid or 0, start))

    def kill(self, peer: int) -> None:
        self.peers[peer].kill()
        self._slot(peer, PEER_KILLED)

    def restart(self, peer: int) -> None:
        self.peers[peer].kill()
        self.peers[peer].start()

    def pause(self, peer: int) -> None:
        self.peers[peer].pause()
        self._slot(peer, PEER_PAUSED)

    def resume(self, peer: int) -> None:
        self.peers[peer].resume()
        self._slot(peer, PEER_RUNNING)

    def partition(self, *groups) -> None:
        self.local.partition(*groups)

    def heal(self) -> None:
        self.local.heal()

    def set_drop_rate(self, p: float) -> None:
        self.local.set_drop_rate(p)

    def destroy(self) -> None:
        """Stop every peer (SIGTERM, bounded) and release the handle; the last peer to
        stop removes the cluster's segments."""
        if self._attached is not None:
            self._attached.close()
            self._attached = None
        for p in self.peers.values():  # all at once, then wait for each
            if p.alive:
                p.resume()
                p._proc.terminate()
        for p in self.peers.values():
            p.stop()
        deadline = time.monotonic() + 5
        while any(p.alive for p in self.peers.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
