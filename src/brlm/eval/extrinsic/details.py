"""The per-item details JSONL of an extrinsic run, written as it goes and resumable.

One line per (model, set, task, item): brlm's details row (`rescore.detail_row`: hash, task,
model, prompt, raw_output, answer, reference, metrics) plus `set`, `index` (the item's line in
its set file, 0-based), `gen_key` (hash of the generation settings) and token counts. Each line is
appended and flushed as soon as its item is generated, so a killed run loses at most the line it
was writing; on the next run `DetailsFile` reads what is there, drops a torn last line (and says
so), and the run skips every item already written.

Rows written with other generation settings (another checkpoint, prompt format or answer length)
for the same model name are refused: mixing them would average two different experiments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from brlm.errors import DataError
from brlm.io.files import parse_json_object

Key = tuple[str, str, str, int]  # (model, set, task, index)


def row_key(row: dict[str, Any]) -> Key:
    return (row["model"], row["set"], row["task"], int(row["index"]))


class DetailsFile:
    """Append-only details JSONL: `done(key)`, `append(row)`; rows already there are in `rows`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.torn_lines = 0
        self._keys: dict[Key, str] = {}
        self._gen_keys: dict[str, str] = {}
        if self.path.is_file():
            self._read()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def _read(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        # A line without its newline at the very end is one an interrupted run was writing.
        if lines and lines[-1].strip():
            try:
                parse_json_object(lines[-1].decode("utf-8"), self.path, len(lines))
                tail_ok = True
            except (DataError, UnicodeDecodeError):
                tail_ok = False
            if not tail_ok:
                self.torn_lines = 1
                keep = raw[:len(raw) - len(lines[-1])]
                with open(self.path, "r+b") as f:
                    f.truncate(len(keep))
                lines = lines[:-1]
            elif not raw.endswith(b"\n"):
                with open(self.path, "ab") as f:
                    f.write(b"\n")
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{self.path}:{lineno}: not valid UTF-8; delete the line or use another --out") from None
            row = parse_json_object(text, self.path, lineno)
            missing = [k for k in ("model", "set", "task", "index", "hash", "gen_key", "raw_output") if k not in row]
            if missing:
                raise DataError(f"{self.path}:{lineno}: missing field '{missing[0]}' (not a details file of `brlm eval extrinsic run`)")
            self._remember(row, f"{self.path}:{lineno}")
            self.rows.append(row)

    def _remember(self, row: dict[str, Any], where: str) -> None:
        key = row_key(row)
        if key in self._keys and self._keys[key] != row["hash"]:
            raise DataError(f"{where}: item {key[1]}/{key[2]}#{key[3]} had hash {self._keys[key]} and now {row['hash']}: "
                            "the set files changed; use another --out")
        self._keys[key] = row["hash"]
        self._gen_keys.setdefault(row["model"], row["gen_key"])

    def check_settings(self, model: str, gen_key: str, describe: str) -> None:
        """Refuse to resume `model` under other generation settings than its rows were written with."""
        old = self._gen_keys.get(model)
        if old is not None and old != gen_key:
            raise DataError(f"{self.path}: rows of model '{model}' were generated with other settings than now ({describe}); "
                            "use another --out (or delete the file) to start over")

    def done(self, key: Key, item_hash: str) -> bool:
        if key not in self._keys:
            return False
        if self._keys[key] != item_hash:
            raise DataError(f"{self.path}: item {key[1]}/{key[2]}#{key[3]} was written with hash {self._keys[key]}, "
                            f"the set now has {item_hash}: the set files changed; use another --out")
        return True

    def append(self, row: dict[str, Any]) -> None:
        self._remember(row, str(self.path))
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.rows.append(row)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "DetailsFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
