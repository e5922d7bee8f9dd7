"""What every REST area of the client shares: rows as DataFrames, profile bodies, a thread pool, polling.

The areas (metadata, images, organizing, anonymization, boxes, networking, configuration, jobs) are mixins on
:class:`ClientBase`, composed into the one :class:`~slicebox_lab.client.SliceboxClient` users import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from .errors import NotFound
from .http import HttpClient

__all__ = ["ClientBase", "frame", "profile_body"]


def frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ("id",)) -> pd.DataFrame:
    """Rows of REST JSON as a DataFrame: the known columns first (``id`` first), then any others."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    df = pd.DataFrame.from_records(list(rows))
    ordered = [c for c in columns if c in df.columns] + [c for c in df.columns if c not in columns]
    return df[ordered]


def profile_body(options: Any) -> dict[str, Any]:
    """An AnonymizationProfile body from ``None`` (basic profile), a list of option names or a dict."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    if isinstance(options, str):
        return {"options": [options]}
    return {"options": list(options)}


def _listify(value: Any) -> list[Any]:
    if isinstance(value, str | int | np.integer):
        return [value]
    return list(value)


def _progress(total: int | None, description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, unit="img")


class ClientBase(HttpClient):
    """The HTTP client plus the helpers several areas use (name look-ups, a thread pool, polling until done)."""

    workers = 4

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any], progress: bool, description: str) -> list[Any]:
        """``fn`` over ``items`` on a small thread pool, results in order, with a tqdm bar."""
        results: list[Any] = [None] * len(items)
        with _progress(len(items), description, progress) as bar, ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(fn, item): n for n, item in enumerate(items)}
            for future in futures:
                results[futures[future]] = future.result()
                bar.update(1)
        return results

    @staticmethod
    def _id_by_name(value: int | str, listing: Callable[[], pd.DataFrame], what: str) -> int:
        if isinstance(value, str) and not value.isdigit():
            known = listing()
            match = known[known["name"] == value] if len(known) else known
            if not len(match):
                raise NotFound(f"no {what} named {value!r}", 404)
            return int(match["id"].iloc[0])
        return int(value)

    def _poll(
        self,
        fetch: Callable[[], dict[str, Any]],
        finished: Callable[[dict[str, Any]], bool],
        done_total: Callable[[dict[str, Any]], tuple[int, int | None]],
        description: str,
        progress: bool,
        timeout: float | None,
        interval: float,
    ) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        state = fetch()
        with _progress(done_total(state)[1], description, progress) as bar:
            while True:
                done, total = done_total(state)
                if total is not None and bar.total != total:
                    bar.total = total
                bar.n = done
                bar.refresh()
                if finished(state):
                    return state
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{description} not finished after {timeout} s: {state}")
                time.sleep(interval)
                state = fetch()
