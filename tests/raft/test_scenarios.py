"""Datadriven Raft scenarios: ``tests/testdata/raft/*.txt`` run through the simulator.

Commands (ids are node ids; every command prints what happened during it, or ``ok``):

    add-nodes N [election=10] [heartbeat=1] [pre-vote=true] [check-quorum=true]
                [lease=false] [chunk=65536] [padding=0] [inflight=256] [max-msg=1048576]
        the first call bootstraps a cluster of N voters (and fixes the options);
        later calls create N servers that join (not yet members: add them by conf-change)
    campaign ID                   ID starts an election now
    tick ID [N] / tick-election ID / tick-heartbeat ID
    stabilize [ID...]             handle Readys and deliver messages until quiescent
                                  (only among the given nodes, if any)
    process-ready ID              handle one Ready of ID
    deliver-msgs ID [drop=true]   deliver (or drop) every in-flight message to ID
    drop-msgs [from=ID] [to=ID] [nth=N]
                                  drop in-flight messages (only the N-th match, from 0)
    pending                       list in-flight messages
    propose ID DATA
    read-index ID CTX
    conf-change ID v4 l5 r2 ...   add voter 4, learner 5, remove 2 (several = joint);
                                  ``leave`` proposes leaving a joint config;
                                  transition=explicit keeps the joint config until left
    transfer-leadership FROM TO
    partition 1 2 / 3             cut links between the groups; heal removes all cuts
    crash ID / restart ID
    compact ID INDEX              ID's application snapshots at INDEX and compacts its log
    status [ID...] / log ID / raft-state
    stats                         messages sent so far, by kind
"""

from __future__ import annotations

import glob
import os
import sys
from collections import Counter
from typing import List, Optional

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from datadriven import Case, run_file  # noqa: E402

from rsm_shm.raft.codec import decode_message  # noqa: E402

TESTDATA = os.path.join(os.path.dirname(__file__), os.pardir, "testdata", "raft")
SCRIPTS = sorted(glob.glob(os.path.join(TESTDATA, "*.txt")))

_LETTER_TO_CC = {"v": 0, "l": 1, "r": 2}  # ConfChangeType ADD_NODE, ADD_LEARNER, REMOVE_NODE


class Driver:
    """Interprets one script's commands against one simulator."""

    def __init__(self) -> None:
        from rsm_shm.raft.sim import Simulator

        self.Simulator = Simulator
        self.sim: Optional[Simulator] = None
        self.sent = Counter()

    # key=value arguments each command accepts (a typo must fail, not be ignored)
    KWARGS = {
        "add-nodes": {
            "election",
            "heartbeat",
            "pre-vote",
            "check-quorum",
            "lease",
            "chunk",
            "padding",
            "inflight",
            "max-msg",
            "seed",
        },
        "deliver-msgs": {"drop"},
        "drop-msgs": {"from", "to", "nth"},
        "conf-change": {"transition"},
    }

    def __call__(self, c: Case) -> str:
        fn = getattr(self, "cmd_" + c.cmd.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"{c.pos}: unknown command {c.cmd!r}")
        unknown = set(c.kwargs) - self.KWARGS.get(c.cmd, set())
        if unknown:
            raise ValueError(f"{c.pos}: {c.cmd} does not take {sorted(unknown)}")
        if c.cmd != "add-nodes" and self.sim is None:
            raise ValueError(f"{c.pos}: add-nodes must come first")
        mark = len(self.sim.out) if self.sim is not None else 0
        extra = fn(c)
        lines = list(self.sim.out[mark:]) if self.sim is not None else []
        if extra:
            lines.extend(extra)
        return "\n".join(lines)

    # ------------------------------------------------------------- cluster
    def cmd_add_nodes(self, c: Case) -> List[str]:
        from rsm_shm.raft.sim import SimOptions, format_conf_state

        n = c.int_arg(0)
        if self.sim is None:
            opts = SimOptions(
                election_tick=int(c.kwargs.get("election", 10)),
                heartbeat_tick=int(c.kwargs.get("heartbeat", 1)),
                pre_vote=c.flag("pre-vote", True),
                check_quorum=c.flag("check-quorum", True),
                lease_reads=c.flag("lease", False),
                snapshot_chunk_size=int(c.kwargs.get("chunk", 64 * 1024)),
                snapshot_padding=int(c.kwargs.get("padding", 0)),
                max_inflight_msgs=int(c.kwargs.get("inflight", 256)),
                max_size_per_msg=int(c.kwargs.get("max-msg", 1 << 20)),
            )
            self.sim = self.Simulator(seed=int(c.kwargs.get("seed", 0)), options=opts)
            ids = self.sim.add_nodes(n)
        else:
            start = max(self.sim.nodes) + 1
            ids = list(range(start, start + n))
            for i in ids:
                self.sim.add_node(i)
        out = []
        for i in ids:
            node = self.sim.nodes[i]
            st = node.storage
            out.append(f"node {i}: {format_conf_state(node.conf_state)} log={st.first_index()}..{st.last_index()}")
        return out

    def _ids(self, c: Case) -> List[int]:
        return [int(a) for a in c.args]

    def cmd_campaign(self, c: Case) -> None:
        self.sim.do(("campaign", c.int_arg(0)))

    def _tick(self, nid: int, n: int) -> None:
        for _ in range(n):
            if not self.sim.do(("tick", nid)):
                raise ValueError(f"cannot tick node {nid} (crashed?)")

    def cmd_tick(self, c: Case) -> None:
        self._tick(c.int_arg(0), c.int_arg(1) if len(c.args) > 1 else 1)

    def cmd_tick_election(self, c: Case) -> None:
        self._tick(c.int_arg(0), self.sim.options.election_tick)

    def cmd_tick_heartbeat(self, c: Case) -> None:
        self._tick(c.int_arg(0), self.sim.options.heartbeat_tick)

    def cmd_stabilize(self, c: Case) -> None:
        self.sim.stabilize(self._ids(c) or None)

    def cmd_process_ready(self, c: Case) -> None:
        nid = c.int_arg(0)
        if not self.sim.do(("ready", nid)):
            self.sim.emit(f"{nid} has no Ready")

    def cmd_deliver_msgs(self, c: Case) -> None:
        nid = c.int_arg(0)
        drop = c.flag("drop", False)
        for f in [f for f in self.sim.net.queue if f.to == nid]:
            self.sim.do(("drop" if drop else "deliver", f.frm, f.to, 0))

    def cmd_drop_msgs(self, c: Case) -> None:
        frm = int(c.kwargs["from"]) if "from" in c.kwargs else None
        to = int(c.kwargs["to"]) if "to" in c.kwargs else None
        nth = int(c.kwargs["nth"]) if "nth" in c.kwargs else None
        matching = [f for f in self.sim.net.queue if (frm is None or f.frm == frm) and (to is None or f.to == to)]
        if nth is not None:
            matching = matching[nth : nth + 1]
        for f in matching:
            k = self.sim.net.between(f.frm, f.to).index(f)
            self.sim.do(("drop", f.frm, f.to, k))

    def cmd_pending(self, c: Case) -> List[str]:
        from rsm_shm.raft.sim import format_message

        return [format_message(decode_message(f.data)) for f in self.sim.net.queue] or ["none"]

    def cmd_propose(self, c: Case) -> None:
        self.sim.do(("propose", c.int_arg(0), c.args[1].encode()))

    def cmd_read_index(self, c: Case) -> None:
        self.sim.do(("read", c.int_arg(0), c.args[1].encode()))

    def cmd_conf_change(self, c: Case) -> None:
        nid = c.int_arg(0)
        changes = []
        for a in c.args[1:]:
            if a == "leave":
                continue
            changes.append((_LETTER_TO_CC[a[0]], int(a[1:])))
        transition = {"auto": 0, "implicit": 1, "explicit": 2}[c.kwargs.get("transition", "auto")]
        self.sim.do(("conf", nid, tuple(changes), transition))

    def cmd_transfer_leadership(self, c: Case) -> None:
        self.sim.do(("transfer", c.int_arg(0), c.int_arg(1)))

    def cmd_partition(self, c: Case) -> None:
        groups, cur = [], []
        for a in c.args:
            if a == "/":
                groups.append(tuple(cur))
                cur = []
            else:
                cur.append(int(a))
        groups.append(tuple(cur))
        self.sim.do(("partition", tuple(groups)))

    def cmd_heal(self, c: Case) -> None:
        self.sim.do(("heal",))

    def cmd_crash(self, c: Case) -> None:
        self.sim.do(("crash", c.int_arg(0)))

    def cmd_restart(self, c: Case) -> None:
        self.sim.do(("restart", c.int_arg(0)))

    def cmd_compact(self, c: Case) -> None:
        nid, idx = c.int_arg(0), c.int_arg(1)
        if not self.sim.do(("compact", nid, idx)):
            self.sim.emit(f"{nid} cannot compact at {idx}")

    # -------------------------------------------------------------- views
    def _status_line(self, nid: int) -> str:
        from rsm_shm.raft.sim import format_conf_state
        from rsm_shm.raft.types import Role

        node = self.sim.nodes[nid]
        if not node.alive:
            return f"{nid}: crashed"
        st = node.raw.status()
        line = (
            f"{nid}: {Role(st.role).name} term={st.term} vote={st.vote} leader={st.leader} "
            f"commit={st.commit} applied={node.sm.index} {format_conf_state(st.conf_state)}"
        )
        if st.role == Role.LEADER and getattr(st, "progress", None):
            prs = []
            for pid in sorted(st.progress):
                pr = st.progress[pid]
                match = getattr(pr, "match", None)
                nxt = getattr(pr, "next", None)
                if match is None and isinstance(pr, (tuple, list)):
                    match, nxt = pr[0], pr[1]
                prs.append(f"{pid}:{match}/{nxt}")
            line += " progress=" + ",".join(prs)
        return line

    def cmd_status(self, c: Case) -> List[str]:
        ids = self._ids(c) or sorted(self.sim.nodes)
        return [self._status_line(i) for i in ids]

    def cmd_raft_state(self, c: Case) -> List[str]:
        from rsm_shm.raft.types import Role

        out = []
        for nid in sorted(self.sim.nodes):
            node = self.sim.nodes[nid]
            if not node.alive:
                out.append(f"{nid}: crashed")
                continue
            st = node.raw.status()
            out.append(f"{nid}: {Role(st.role).name} term={st.term} leader={st.leader}")
        return out

    def cmd_log(self, c: Case) -> List[str]:
        from rsm_shm.raft.sim import format_entry

        nid = c.int_arg(0)
        st = self.sim.nodes[nid].storage
        snap = st.snapshot().meta
        out = [f"{nid}: snapshot {snap.term}/{snap.index}, entries {st.first_index()}..{st.last_index()}"]
        if st.last_index() >= st.first_index():
            out.append(" ".join(format_entry(e) for e in st.entries(st.first_index(), st.last_index() + 1)))
        return out

    def cmd_stats(self, c: Case) -> List[str]:
        now = self.sim.sent_by_type
        out = [f"{k}={now[k] - self.sent.get(k, 0)}" for k in sorted(now) if now[k] != self.sent.get(k, 0)]
        self.sent = Counter(now)
        return [" ".join(out) or "no messages"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", SCRIPTS, ids=[os.path.basename(p)[:-4] for p in SCRIPTS])
def test_scenario(path: str) -> None:
    run_file(path, Driver())
