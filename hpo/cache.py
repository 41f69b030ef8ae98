"""The read cache: one bounded cache per database handle, owned by whoever built the handle
(the app), keyed by study and version, emptied when a study is deleted.

A study's views (figures, importances, its parsed spec) are costly to build and change only
when the study does. Each entry remembers the study ``version`` it was built from; a running
study's entries also expire after ``max_age`` seconds, because reports change its curves
without changing its version.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["StudyCache"]

T = TypeVar("T")
_Key = tuple[int, str, Hashable]


class StudyCache:
    """A thread-safe LRU of per-study values.

    Args:
        max_entries: entries kept at most, over all studies; the least recently used go first.
    """

    def __init__(self, max_entries: int = 512) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries is {max_entries}, but must be max_entries >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[_Key, tuple[Hashable, float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[_Key, threading.Lock] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(
        self,
        study_id: int,
        kind: str,
        key: Hashable = None,
        *,
        version: Hashable = None,
        max_age: float | None = None,
    ) -> Any | None:
        """The cached value, or None when absent, built from another version, or too old."""
        with self._lock:
            entry = self._entries.get((study_id, kind, key))
            if entry is None:
                return None
            built_version, built_at, value = entry
            if built_version != version or (
                max_age is not None and time.monotonic() - built_at > max_age
            ):
                return None
            self._entries.move_to_end((study_id, kind, key))
            return value

    def put(
        self, study_id: int, kind: str, key: Hashable, value: Any, *, version: Hashable = None
    ) -> None:
        with self._lock:
            self._entries[(study_id, kind, key)] = (version, time.monotonic(), value)
            self._entries.move_to_end((study_id, kind, key))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_or_build(
        self,
        study_id: int,
        kind: str,
        key: Hashable,
        build: Callable[[], T],
        *,
        version: Hashable = None,
        max_age: float | None = None,
    ) -> T:
        """The cached value, or ``build()``'s, stored. Concurrent callers for the same entry
        wait for one build instead of each building it (a page asks for six views at once)."""
        hit = self.get(study_id, kind, key, version=version, max_age=max_age)
        if hit is not None:
            return hit
        with self._lock:
            building = self._building.setdefault((study_id, kind, key), threading.Lock())
        with building:
            hit = self.get(study_id, kind, key, version=version, max_age=max_age)
            if hit is not None:
                return hit
            value = build()
            self.put(study_id, kind, key, value, version=version)
        with self._lock:
            self._building.pop((study_id, kind, key), None)
        return value

    def drop(self, study_id: int) -> None:
        """Forget everything cached for ``study_id`` (it was deleted)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == study_id]:
                del self._entries[key]
