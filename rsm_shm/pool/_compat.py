"""The ring names this package relies on, in one place.

Issue 11 renames ``Ring.close()`` (end of stream) to ``shutdown()``, ``Ring.detach()``
(unmap) to ``close()`` and ``Closed``/``EndOfStream`` to ``ShutDown``.  The pool is
written against the new names; these three helpers keep it working on either side of
that rename while it lands.
"""
from __future__ import annotations

from .. import ring as _ring

#: Raised by put/get once a ring was shut down (and, for get, drained).
ShutDown = getattr(_ring, "ShutDown", None) or _ring.Closed


def shutdown(r) -> None:
    """End the ring's stream for every process."""
    (getattr(r, "shutdown", None) or r.close)()


def unmap(r) -> None:
    """Unmap the ring in this process only."""
    (getattr(r, "detach", None) or r.close)()
