"""Atomic writes, stale temporary files, and reading users' CSV files with errors that name the file.

Every output is written to a temporary name in the same folder, then renamed, so a killed job never leaves
a half-written file that looks finished (design.md, "Contracts"). What a kill does leave is the temporary
file itself, `.<name>.<8 random chars>.tmp<suffix>`: `is_temp_file` recognises one, and each job removes
those of its own outputs when it starts (`remove_stale_temp_files`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:                 # pandas is imported where used: the CLI imports this module for DataError
    import pandas as pd

# mkstemp's names: prefix + 8 characters of [a-z0-9_] + suffix (tempfile._RandomNameSequence).
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>(\.[A-Za-z0-9]+)*)$")


class DataError(ValueError):
    """A problem with the user's data or its files; the message names the file and what to do.

    The CLI prints it as one line and exits 1 instead of showing a traceback.
    """


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    `suffix` keeps the extension library writers rely on (nibabel picks gzip from ".nii.gz").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; outputs are shared data, so give them the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def temp_target(name: str) -> str | None:
    """The file name an `atomic_path` temporary file stands for (`.v.nii.gz.ab12cd34.tmp.nii.gz` → `v.nii.gz`),
    or None when `name` is not such a file."""
    match = _TEMP_NAME.match(name)
    return match.group("target") if match else None


def is_temp_file(path: str | os.PathLike) -> bool:
    return temp_target(Path(path).name) is not None


def remove_stale_temp_files(folder: str | os.PathLike, targets: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files a killed job left in `folder` (not recursive); returns what was removed.

    `targets`: names of the final files whose temporary files the calling job owns. Only those are removed,
    so a job never deletes the half-written file of another job writing into the same folder at the same
    time (preprocessing shards share `preprocessed/volumes/`). None removes every temporary file: only for
    a folder no other job writes into.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    owned = None if targets is None else set(targets)
    removed = []
    for entry in os.scandir(folder):
        target = temp_target(entry.name)
        if target is None or not entry.is_file(follow_symlinks=False) or (owned is not None and target not in owned):
            continue
        Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return sorted(removed)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_jsonl_atomic(path: str | os.PathLike, rows) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True) + "\n")


def _undecodable(path: Path, what: str) -> DataError:
    """Where the first byte that is not UTF-8 sits (byte offset, line), in an error that says what to do."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, offset) + 1
        return DataError(f"{path}: {what} is not UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} "
                         f"(line {line}) cannot be decoded; re-save the file as UTF-8 (e.g. "
                         f"`iconv -f latin1 -t utf-8 {path.name} > fixed.csv` for a Latin-1/Windows-1252 export)")
    return DataError(f"{path}: {what} could not be decoded as UTF-8; re-save the file as UTF-8")


def read_text(path: str | os.PathLike, what: str = "text file") -> str:
    """A user's text file as UTF-8 (a byte-order mark is dropped); DataError naming the file and the byte."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise _undecodable(path, what) from None


def read_csv(path: str | os.PathLike, what: str = "CSV", **kwargs) -> pd.DataFrame:
    """A user's CSV as UTF-8 (utf-8-sig: Excel's byte-order mark is dropped, not glued to the first column).

    An empty file or bytes that are not UTF-8 raise DataError naming the file, where and what to do,
    instead of pandas' traceback that names neither. `kwargs` go to pandas.read_csv.
    """
    import pandas as pd

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: {what} is an empty file (0 bytes); expected a header row and one row per "
                        "volume; re-export it, or remove it from the config")
    try:
        return pd.read_csv(path, encoding="utf-8-sig", **kwargs)
    except UnicodeDecodeError:
        raise _undecodable(path, what) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} has no header row (only blank lines); re-export it with its "
                        "column names") from None
