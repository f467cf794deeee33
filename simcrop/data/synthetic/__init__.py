"""The embedded default corpus: CT-RATE v2 layout, deterministic from a seed (docs/data.md).

Modules: presets (grid table), shapes (geometry), phantom (anatomy in HU), findings (lesion planting),
reports (text), layout (names, paths, CSVs), corpus (generate_corpus and the per-scan job).
"""
from .corpus import generate_corpus
from .phantom import ORGAN_LABELS
from .presets import PRESETS

__all__ = ["generate_corpus", "ORGAN_LABELS", "PRESETS"]
