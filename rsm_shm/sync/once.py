"""Once: run a callable exactly once across every process (algorithm: csrc/once.c)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .._errors import OwnerDiedWarning, raise_for
from .._native import ffi, lib
from ..segment import Kind, SegmentHeader
from . import _base
from ._base import SharedObject, pinned

__all__ = ["Once", "OnceStatistics"]


@dataclass(frozen=True)
class OnceStatistics:
    done: bool
    running: bool
    runner_tid: int
    runner_pid: int
    runner_alive: Optional[bool]
    waiters: int
    taken_over_from: int  # pid of a runner that died, 0 if none

    def __str__(self) -> str:
        if self.done:
            s = "done"
        elif self.running:
            alive = {True: "alive", False: "dead", None: "?"}[self.runner_alive]
            s = f"running in {self.runner_pid}/{self.runner_tid} ({alive})"
        else:
            s = "not run"
        if self.waiters:
            s += f", {self.waiters} waiting"
        if self.taken_over_from:
            s += f", taken over from dead pid {self.taken_over_from}"
        return s


def _body_size(header: SegmentHeader) -> int:
    return int(lib.rsm_once_size(_base.check_nslots(header)))


class Once(SharedObject):
    """Runs a callable exactly once across all processes that share it.

    ``once.call(fn, *args) -> bool``: the first caller runs ``fn``; every concurrent caller
    waits until it finished; later callers return at once.  Returns True in the caller that
    ran it.  If ``fn`` raises, the exception propagates in that caller and the Once stays
    un-run, so the next caller (a waiter, woken) tries again.  If the running process dies,
    a waiter takes the run over within about 0.1 s, is warned with
    :class:`OwnerDiedWarning`, and runs ``fn`` itself.  ``timeout`` bounds the wait
    (returns False if it passed before the run finished).
    """

    _kind = Kind.ONCE

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        create: Optional[bool] = None,
        mode: int = 0o600,
        max_waiters: int = _base.DEFAULT_MAX_WAITERS,
    ) -> None:
        nslots = _base.validate_max_waiters(max_waiters)
        self._open_segment(
            name,
            create,
            mode,
            lib.rsm_once_size(nslots),
            (nslots,),
            lambda seg: lib.rsm_once_init(seg.body("rsm_once *"), nslots),
            _body_size,
        )
        self._ptr = self._seg.body("rsm_once *")
        self._check_queues(ffi.addressof(self._ptr, "wq"))

    @property
    @pinned
    def done(self) -> bool:
        return bool(self._ptr.word & lib.RSM_ONCE_DONE)

    def _on_slice(self, w: Any) -> Optional[int]:
        word = self._ptr.word
        runner = word & lib.RSM_TID_MASK
        if not word & lib.RSM_ONCE_DONE and _base.owner_is_dead(runner):
            if lib.rsm_once_recover(self._ptr, runner, w) == lib.RSM_OWNER_DEAD:
                return int(lib.RSM_OWNER_DEAD)
        return None

    @pinned
    def call(self, /, fn: Callable[..., Any], *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> bool:
        ptr = self._ptr
        run = ffi.new("int *")
        r = _base.run_blocking(
            lambda w, d: lib.rsm_once_begin(ptr, w, d, run),
            lambda w: lib.rsm_wq_cancel(ffi.addressof(ptr, "wq"), w),
            _base.deadline(timeout, _base.RULE_WAIT),
            queue=ffi.addressof(ptr, "wq"),
            seg=self._seg,
            on_slice=self._on_slice,
        )
        if r == lib.RSM_TIMEOUT:
            return False
        if r == lib.RSM_OWNER_DEAD:
            run[0] = 1
            try:
                warnings.warn(
                    OwnerDiedWarning(
                        f"Once {self.name!r}: the process running it (pid {ptr.dead_pid}) died; running it here"
                    ),
                    stacklevel=2,
                )
            except BaseException:
                lib.rsm_once_finish(ptr, 0)
                raise
        elif r != lib.RSM_OK:
            raise_for(r, self)  # RSM_INVAL: called again from inside its own callable
        if not run[0]:
            return False
        ok = False
        try:
            fn(*args, **kwargs)
            ok = True
        finally:
            lib.rsm_once_finish(ptr, 1 if ok else 0)
        return True

    @pinned
    def statistics(self) -> OnceStatistics:
        p = self._ptr
        word = p.word
        tid = 0 if word & lib.RSM_ONCE_DONE else word & lib.RSM_TID_MASK
        return OnceStatistics(
            done=bool(word & lib.RSM_ONCE_DONE),
            running=tid != 0,
            runner_tid=tid,
            runner_pid=p.runner_pid if tid else 0,
            runner_alive=(not _base.owner_is_dead(tid)) if tid else None,
            waiters=p.wq.nwaiters + p.wq.noverflow,
            taken_over_from=p.dead_pid,
        )
