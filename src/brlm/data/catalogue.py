"""A small catalogue of PT-BR corpora: `brlm data list`, `brlm data get NAME`.

* `fakebr`: the Fake.br corpus (NILC/USP), downloaded from its public GitHub archive (resumable:
  an interrupted download continues from its `.part` file with an HTTP Range request), checked
  against a sha256, and unpacked into `news.jsonl` with its metadata (label, pair, author, url,
  category, date).
* `brwac`, `canarim`: Hugging Face datasets, streamed through `datasets` into `data.jsonl`.

GitHub builds branch archives on the fly, so their bytes can change; the catalogue pins the
sha256 when it has one, and otherwise records the sha256 of the first download beside the file
(`archive.zip.sha256`) and verifies every later use against it.

    brlm data get fakebr && brlm data prepare --source ~/.cache/brlm/fakebr/news.jsonl
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from brlm.errors import DataError
from brlm.io.files import atomic_path, file_sha256, write_text
from brlm.io.logging import info
from brlm.io.machine import cache_dir as machine_cache_dir


@dataclass
class Entry:
    name: str
    kind: str  # "archive" (download + unpack) or "hub" (Hugging Face datasets)
    description: str
    url: str = ""
    sha256: str | None = None
    hf_name: str = ""
    text_field: str = "text"
    source_file: str = ""  # what `brlm data prepare --source` should point at, inside the entry's folder


CATALOGUE: dict[str, Entry] = {
    "fakebr": Entry(
        "fakebr", "archive", "Fake.br: 7,200 Brazilian news texts, true/fake pairs with metadata (NILC/USP, PROPOR 2018)",
        url="https://github.com/roneysco/Fake.br-Corpus/archive/refs/heads/master.zip", source_file="news.jsonl",
    ),
    "brwac": Entry("brwac", "hub", "BrWaC: 3.5 M Brazilian web pages (Hugging Face nlpufg/brwac, streamed)",
                   hf_name="nlpufg/brwac", text_field="text", source_file="data.jsonl"),
    "canarim": Entry("canarim", "hub", "Canarim-Instruct PT-BR instructions (Hugging Face dominguesm/Canarim-Instruct-PTBR-Dataset)",
                     hf_name="dominguesm/Canarim-Instruct-PTBR-Dataset", text_field="output", source_file="data.jsonl"),
}


def cache_root(cache_dir: str | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else machine_cache_dir()


def list_entries() -> list[str]:
    return [f"{e.name:<10} {e.kind:<8} {e.description}" for e in CATALOGUE.values()]


def download(url: str, dest: Path, sha256: str | None = None, chunk: int = 1 << 16) -> Path:
    """Download `url` to `dest`, resuming from `dest.part`; verify sha256 (pinned, or recorded
    on first download in `dest.sha256`)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recorded = dest.with_name(dest.name + ".sha256")
    expected = sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
    if dest.is_file() and expected and file_sha256(dest) == expected:
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "brlm"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            mode = "ab" if have and resp.status == 206 else "wb"
            if mode == "wb":
                have = 0  # the server ignored the Range header: start over
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total else None
            with open(part, mode) as f:
                done = have
                while block := resp.read(chunk):
                    f.write(block)
                    done += len(block)
            if total is not None and done < total:
                raise DataError(f"{url}: download interrupted at {done} of {total} bytes; run the same command again to resume")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked for bytes past the end: the .part is already whole
            pass
        else:
            raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"{url}: cannot download ({reason}); {part.name} keeps what arrived, run again to resume, "
                        "or download it elsewhere and pass --url file:///path/to/archive.zip") from None
    got = file_sha256(part)
    if expected and got != expected:
        part.unlink()
        raise DataError(f"{url}: sha256 {got[:16]}… does not match the expected {expected[:16]}…; the partial file was removed")
    os.replace(part, dest)
    if not expected:
        write_text(recorded, got + "\n")
        info(f"{dest.name}: no pinned checksum; recorded sha256 {got} in {recorded.name}")
    return dest


_META_FIELDS = ("author", "url", "category", "date", "tokens")


def unpack_fakebr(archive: Path, out: Path) -> dict[str, int]:
    """Fake.br's zip -> JSONL: one object per text with id, label, pair, metadata and text."""
    counts: Counter = Counter()
    pat = re.compile(r"(?:^|/)full_texts/(fake|true)/(\d+)\.txt$")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError(f"{archive}: not a zip archive (corrupt download?); delete it and run `brlm data get fakebr` again") from None
    with zf:
        names = set(zf.namelist())
        texts = sorted(((m.group(1), int(m.group(2)), n) for n in names if (m := pat.search(n))), key=lambda t: (t[1], t[0] != "true"))
        if not texts:
            raise DataError(f"{archive}: no full_texts/{{true,fake}}/N.txt inside; not the Fake.br archive")
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for label, num, name in texts:
                raw = zf.read(name)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                    counts["utf8_errors"] += 1
                row = {"id": f"{label}-{num}", "label": label, "pair": num}
                meta_name = name.replace(f"full_texts/{label}/{num}.txt", f"full_texts/{label}-meta-information/{num}-meta.txt")
                if meta_name in names:
                    lines = zf.read(meta_name).decode("utf-8", errors="replace").splitlines()
                    for key, value in zip(_META_FIELDS, lines):
                        value = value.strip()
                        row[key] = None if value in ("", "None") else value
                row["text"] = text.strip()
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                counts[label] += 1
    return dict(counts)


def get(name: str, cache_dir: str | None = None, url: str | None = None, sha256: str | None = None, max_docs: int = 0) -> Path:
    """Fetch catalogue entry `name` into `<cache>/<name>/`; returns the file to pass as --source."""
    if name not in CATALOGUE:
        raise DataError(f"{name!r}: not in the catalogue; available: {', '.join(CATALOGUE)} (see `brlm data list`)")
    e = CATALOGUE[name]
    folder = cache_root(cache_dir) / name
    out = folder / e.source_file
    if e.kind == "archive":
        archive = download(url or e.url, folder / "archive.zip", sha256=sha256 or (None if url else e.sha256))
        counts = unpack_fakebr(archive, out)
        write_text(folder / "README.txt", f"{e.description}\nsource: {url or e.url}\nsha256: {file_sha256(archive)}\ncounts: {counts}\n")
        info(f"{name}: {sum(v for k, v in counts.items() if k != 'utf8_errors')} documents -> {out}")
        return out
    from brlm.data.sources import read_hf

    stats: Counter = Counter()
    n = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for doc in read_hf(e.hf_name, e.text_field, stats, cache_dir=str(folder / "hf")):
            f.write(json.dumps({"id": doc.id, "text": doc.text, **doc.meta}, ensure_ascii=False) + "\n")
            n += 1
            if max_docs and n >= max_docs:
                break
    info(f"{name}: {n} documents -> {out}")
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
