"""Training: the pre-training loop, checkpoints, distributed set-up, optimiser and schedule, export.

Imports `simcrop.model` / `simcrop.data`; nothing there imports this package.
"""
