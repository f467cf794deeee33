"""Quarantine records: a bad input is set aside with the reason, and the batch goes on."""
from __future__ import annotations

from dataclasses import asdict, dataclass

QUARANTINE_COLUMNS = ["volume_id", "path", "stage", "reason"]


class BadVolume(ValueError):
    """An input volume that cannot be used; the message says which file and what is wrong."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class QuarantineRecord:
    volume_id: str
    path: str
    stage: str
    reason: str

    def as_row(self) -> dict:
        return asdict(self)
