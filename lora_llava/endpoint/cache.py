"""The on-disk request cache: one JSON line per answered request, keyed by a hash of the request.

Append-only and flushed line by line, so a run killed at any moment keeps every answer it had received (a
half-written last line is ignored on reading); a rerun finds them and sends only what is missing. Only the
request's hash and the answer are stored: never the key, headers or the endpoint's address.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path


def request_key(model: str, messages: list, params: dict) -> str:
    """What identifies a request: the model, the messages and every sampling parameter."""
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RequestCache:
    """`path` None: answers are kept in memory only, for this process (an interactive `predict` session)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            self._entries = self._read()

    def _read(self) -> dict[str, dict]:
        entries = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a run killed while writing it: that request is sent again
                entries[entry["key"]] = entry
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        entry = {"key": key, **entry}
        if self.path is None:
            with self._lock:
                self._entries[key] = entry
            return
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                if f.tell() and not self._ends_with_newline():
                    f.write("\n")  # after a torn line, start a fresh one
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._entries[key] = entry

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
