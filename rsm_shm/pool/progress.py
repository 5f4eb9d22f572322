"""A progress bar for a pool's ``map`` (tqdm when it is installed; optional).

    from rsm_shm.pool import ProcessPool
    from rsm_shm.pool.progress import progress

    with ProcessPool() as pool:
        for r in progress(pool.map(f, items, chunksize=64), total=len(items), pool=pool):
            ...

``progress`` passes the results through unchanged and advances a bar by one per result.
With ``pool=`` the bar's postfix also shows the pool's worker deaths, retries and failed
jobs (refreshed at most every ``refresh`` seconds, so it costs nothing per item).  The bar
is a ``tqdm.tqdm`` if tqdm is importable, else a minimal text bar on stderr; pass ``bar=``
to use any object with ``update(n)``, ``close()`` and optionally ``set_postfix(**kw)``
(a tqdm instance, or an adapter for another library).
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO, TypeVar

__all__ = ["progress", "TextBar"]

T = TypeVar("T")


class TextBar:
    """The fallback bar: ``desc: n/total [rate/s] postfix`` rewritten in place on a stream."""

    def __init__(
        self, total: Optional[int] = None, desc: str = "", file: Optional[TextIO] = None, min_interval: float = 0.1
    ) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.file = file if file is not None else sys.stderr
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._min_interval = min_interval

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self._min_interval or (self.total is not None and self.n >= self.total):
            self._last = now
            self._draw(now)

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def _draw(self, now: float) -> None:
        rate = self.n / max(now - self._start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        line = f"{self.desc + ': ' if self.desc else ''}{self.n}{of} [{rate:,.0f}/s]"
        if self.postfix:
            line += f" {self.postfix}"
        self.file.write("\r" + line)
        self.file.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self.file.write("\n")
        self.file.flush()


def _default_bar(total: Optional[int], desc: str) -> Any:
    try:
        tqdm = importlib.import_module("tqdm").tqdm  # optional, untyped
    except ImportError:
        return TextBar(total, desc)
    return tqdm(total=total, desc=desc or None)


def progress(
    results: Iterable[T],
    total: Optional[int] = None,
    *,
    pool: Any = None,
    desc: str = "",
    bar: Any = None,
    refresh: float = 0.5,
) -> Iterator[T]:
    """Yield ``results`` unchanged, advancing a progress bar per item (see the module)."""
    own = bar is None
    if own:
        bar = _default_bar(total, desc)
    postfix = getattr(bar, "set_postfix", None) if pool is not None else None
    last = float("-inf")
    try:
        for item in results:
            bar.update(1)
            if postfix is not None:
                now = time.monotonic()
                if now - last >= refresh:
                    last = now
                    st = pool.statistics()
                    postfix(deaths=st.worker_deaths, retries=st.retries, failed=st.failed)
            yield item
    finally:
        if own:
            bar.close()
