"""Spoil parts of a `.b2nd` training-cache file, to show which chunks a reader decodes."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def corrupt_chunks(path, keep_lo=(0, 0, 0), keep_hi=(0, 0, 0)) -> int:
    """Overwrite the compressed bytes of every chunk of a .b2nd file that does not meet the box
    [keep_lo, keep_hi), except chunk 0: those voxels can no longer be decoded (blosc2 raises). Returns how
    many chunks were spoilt. Chunks are numbered in C order over the chunk grid. Chunk 0 stays intact because
    blosc2 >= 4.15 decodes it when it opens a file (and refuses the file when it cannot). The bytes are
    changed in place in the file, found by content (each chunk's bytes must occur once)."""
    import blosc2

    stored = blosc2.open(str(path), mode="r")
    grid = [-(-n // c) for n, c in zip(stored.shape, stored.chunks)]
    spoil = []
    for i in range(1, stored.schunk.nchunks):
        start = [j * c for j, c in zip(np.unravel_index(i, grid), stored.chunks)]
        if not all(a < hi and a + c > lo for a, c, lo, hi in zip(start, stored.chunks, keep_lo, keep_hi)):
            spoil.append(bytes(stored.schunk.get_chunk(i)))
    del stored
    data = bytearray(Path(path).read_bytes())
    for chunk in spoil:
        at = data.find(chunk)
        if at < 0 or data.find(chunk, at + 1) >= 0:
            raise ValueError(f"{path}: a chunk's bytes are not found exactly once; use less regular data")
        data[at + 40: at + len(chunk)] = b"\xab" * (len(chunk) - 40)
    Path(path).write_bytes(bytes(data))
    return len(spoil)
