"""Spoil parts of a `.b2nd` training-cache file, to show which chunks a reader decodes."""
from __future__ import annotations

import numpy as np


def corrupt_chunks(path, keep_lo=(0, 0, 0), keep_hi=(0, 0, 0)) -> int:
    """Overwrite the compressed bytes of every chunk of a .b2nd file that does not meet the box
    [keep_lo, keep_hi): those voxels can no longer be decoded (blosc2 raises). Returns how many chunks were
    spoilt. Chunks are numbered in C order over the chunk grid."""
    import blosc2

    stored = blosc2.open(str(path), mode="a")
    grid = [-(-n // c) for n, c in zip(stored.shape, stored.chunks)]
    spoilt = 0
    for i in range(stored.schunk.nchunks):
        start = [j * c for j, c in zip(np.unravel_index(i, grid), stored.chunks)]
        if all(a < hi and a + c > lo for a, c, lo, hi in zip(start, stored.chunks, keep_lo, keep_hi)):
            continue
        chunk = bytearray(stored.schunk.get_chunk(i))
        chunk[40:] = b"\xab" * (len(chunk) - 40)
        stored.schunk.update_chunk(i, bytes(chunk))
        spoilt += 1
    return spoilt
