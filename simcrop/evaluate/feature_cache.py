"""One cache of per-volume features, for every evaluation that encodes volumes (probe, zero-shot,
retrieval, grounding).

A cache file is one `torch.save`d dict {"ids": [volume id or path, ...], "features": (V, ...) tensor,
**meta} written atomically (a killed run leaves the old file or none, never half of one). `meta` holds
what the features depend on besides the weights: the crop, the padding mode, the view. A read returns
the rows of the requested ids, in request order, only when every id is there and every meta value
matches; otherwise (or when the file is unreadable) it returns None and the caller recomputes. The
weights are part of the file name (`key`), so one file never mixes encoders.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from simcrop.io import atomic_path

log = logging.getLogger(__name__)


def key(**parts) -> str:
    """16 hex digits of sha256 over the JSON of `parts` (sorted keys; tuples as lists)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_stamp(path) -> dict:
    """A file's identity without reading it: resolved path, size, mtime (a rewritten checkpoint is new)."""
    stat = Path(path).stat()
    return {"checkpoint": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_digest(path) -> str:
    """16 hex digits of sha256 of a file's bytes (streamed: ViT-B weights are ~350 MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def load(path, ids: Sequence[str], **meta) -> torch.Tensor | None:
    """The cached features of `ids` (request order), or None (no file, an id missing, other meta, unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(cached, dict) or "ids" not in cached:      # another (older) format: recompute
            return None
        where = {v: i for i, v in enumerate(cached["ids"])}
        if any(_plain(cached.get(k)) != _plain(v) for k, v in meta.items()) or not all(v in where for v in ids):
            return None
        features = cached["features"][[where[v] for v in ids]]
    except Exception as err:             # a damaged cache is recomputed, never trusted
        log.warning("ignoring unreadable feature cache %s: %s", path, err)
        return None
    log.info("features: %d volumes from cache %s", len(ids), path)
    return features


def save(path, ids: Sequence[str], features: torch.Tensor, **meta) -> Path:
    """Write {"ids", "features", **meta} to `path` atomically."""
    payload = {"ids": list(ids), "features": features, **{k: _plain(v) for k, v in meta.items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
