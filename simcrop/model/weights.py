"""Reading pre-trained weights: training checkpoints and encoder files, for every consumer.

Evaluation (embed, probe, segment) and training (resume, `--init`, export) both read weights; this module
is the reading side alone, so evaluation does not depend on the training package. The writing side
(`save_checkpoint`, `save_torch`, `export_encoder`) stays in the training package (train/checkpoint.py,
train/export.py), which imports its reading from here.

- `read_checkpoint` / `load_model_state`: a training checkpoint (format in train/checkpoint.py),
  loaded with `weights_only=True`; only the frozen text encoder's keys may be missing.
- `load_encoder_init`: an encoder's weights from our `encoder.pt`, a bare state dict, a training
  checkpoint or an MAE-style checkpoint of the authors' code, under the official (timm) key names.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch import nn

from simcrop.model.pos_embed import identify_pos_embed

log = logging.getLogger(__name__)
FROZEN_PREFIXES = ("text_encoder.",)
ANCHOR = "patch_embed.proj.weight"
IGNORED_INIT_PREFIXES = ("head.", "fc_norm.")   # classifier heads of official fine-tuned weights
# ViT parameter names (after the encoder prefix): what `--init` takes from a file; the rest is left out.
ENCODER_NAMES = ("cls_token", "pos_embed")
ENCODER_PREFIXES = ("patch_embed.", "blocks.", "norm.")


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model; the message names the keys."""


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def frozen_keys(model: nn.Module, prefixes=FROZEN_PREFIXES) -> set[str]:
    """State-dict keys of frozen sub-models: the frozen parameters under `prefixes`, and all buffers
    under a prefix whose parameters are all frozen (a frozen BERT's buffers come with its package too)."""
    model = _unwrap(model)
    keys = set()
    params = dict(model.named_parameters())
    state = model.state_dict()
    for prefix in prefixes:
        under = {n: p for n, p in params.items() if n.startswith(prefix)}
        keys |= {n for n, p in under.items() if not p.requires_grad}
        if under and not any(p.requires_grad for p in under.values()):
            keys |= {k for k in state if k.startswith(prefix)}
    return keys


def read_checkpoint(path) -> dict:
    """The checkpoint dict on CPU (tensors and plain values only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model_state(model: nn.Module, state: dict, where: str = "checkpoint") -> None:
    """Load `state` into model; only the frozen keys may be missing, and nothing may be unexpected."""
    model = _unwrap(model)
    result = model.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - frozen_keys(model))
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{where} does not fit the model: missing {missing[:10]} "
                              f"({len(missing)} in all), unexpected {sorted(result.unexpected_keys)[:10]} "
                              f"({len(result.unexpected_keys)} in all)")


def encoder_prefix(state: dict) -> str:
    """The prefix under which a ViT encoder sits in `state` ('' for a bare encoder state dict).

    A prefix qualifies when it holds `patch_embed.proj.weight`, `cls_token` and `blocks.0.attn.qkv.weight`;
    an image decoder has none of these. Prefers a prefix ending in `encoder.`; raises if none or several.
    """
    found = []
    for key in state:
        if key.endswith(ANCHOR):
            prefix = key[: -len(ANCHOR)]
            if f"{prefix}cls_token" in state and f"{prefix}blocks.0.attn.qkv.weight" in state:
                found.append(prefix)
    if not found:
        raise ValueError(f"no ViT encoder in the state dict (no '*{ANCHOR}' with cls_token and blocks.0)")
    if len(found) > 1:
        named = [p for p in found if p.endswith("encoder.")]
        if len(named) != 1:
            raise ValueError(f"several ViT encoders in the state dict: prefixes {found}")
        found = named
    return found[0]


def encoder_state(state: dict) -> dict:
    """The encoder's entries of a model state dict, prefix stripped."""
    prefix = encoder_prefix(state)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class _StandIn:
    """Inert placeholder for a pickled object of a class not on the weights-only list (e.g. a path or a
    numpy scalar inside `args`): built from the pickled arguments and state, never the real class."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


def read_weights_file(path):
    """torch.load(path) with `weights_only=True`, so no pickled code runs.

    `argparse.Namespace` (the `args` of MAE-style checkpoints) is allowed as itself; any other class
    the file names (found by `torch.serialization.get_unsafe_globals_in_checkpoint`, which reads the
    pickle without running it) is rebuilt as an inert `_StandIn`. Returns (object, stand-in names).
    """
    serialization = torch.serialization
    if not hasattr(serialization, "safe_globals"):                        # torch < 2.5
        return torch.load(path, map_location="cpu", weights_only=True), []
    try:
        unsafe = list(serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:                                                     # legacy (non-zip) file
        unsafe = []
    allowed: list = [argparse.Namespace]
    stand_ins = sorted(n for n in unsafe if n != "argparse.Namespace")
    for name in stand_ins:
        allowed.append((type(name.rsplit(".", 1)[-1], (_StandIn,), {"qualname": name}), name))
    with serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True), stand_ins


def _is_encoder_name(name: str) -> bool:
    return name in ENCODER_NAMES or name.startswith(ENCODER_PREFIXES)


def _summarise(keys, depth: int) -> str:
    """'decoder_blocks.* (32), mask_token, ...': keys grouped by their first `depth` components."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        groups.setdefault(".".join(parts[:depth]), []).append(key)
    return ", ".join(g[0] if len(g) == 1 and g[0] == head else f"{head}.* ({len(g)})"
                     for head, g in sorted(groups.items()))


def load_encoder_init(encoder: nn.Module, path) -> list[str]:
    """Load an encoder's weights from `path` into `encoder`; return the file's state keys left out.

    Reads `{"model": state_dict}` (our `encoder.pt`, official key names), a bare state dict, our training
    checkpoints, and MAE-style checkpoints `{"model", "optimizer", "epoch", "scaler", "args"}` whose
    "model" holds the encoder's keys at the top level beside the decoder's (`decoder_*`, `mask_token`, text
    towers). The encoder is found by its keys (`encoder_prefix`); of it, the ViT names (`cls_token`,
    `pos_embed`, `patch_embed.*`, `blocks.*`, `norm.*`) load strictly (every key present with the same shape,
    no extra block); classifier heads (`head.*`, `fc_norm.*`) and everything else are left out and named in
    one log line. `args` is read as an `argparse.Namespace` without unpickling anything else (see
    `read_weights_file`).

    Position table: `pos_embed` is a fixed sin-cos table chosen by `model.pos_embed`, never learned. A file
    whose table is another kind (or no known kind) does not replace it: the model keeps its own and a
    warning names both kinds.
    """
    ckpt, stand_ins = read_weights_file(path)
    top_rest: list[str] = []
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        top_rest = sorted(str(k) for k in ckpt if k != "model")
        state = ckpt["model"]
    else:
        state = ckpt
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or {{'model': state dict}}")
    prefix = encoder_prefix(state)
    picked, classifier, rest = {}, [], []
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name is not None and name.startswith(IGNORED_INIT_PREFIXES):
            classifier.append(key)
        elif name is not None and _is_encoder_name(name):
            picked[name] = value
        else:
            rest.append(key)
    not_tensors = sorted(k for k, v in picked.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path}: encoder entries that are not tensors: {not_tensors}")
    _check_pos_embed(encoder, picked, path)
    try:
        encoder.load_state_dict(picked, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: encoder weights do not match the model (strict): {err}") from err
    notes = [f"loaded {len(picked)} encoder tensors" + (f" under prefix '{prefix}'" if prefix else "")]
    if classifier:
        notes.append(f"left out classifier keys {', '.join(sorted(classifier))}")
    if rest:
        notes.append(f"left out {len(rest)} other keys: {_summarise(rest, max(1, prefix.count('.')))}")
    if top_rest:
        notes.append(f"top-level entries not used: {', '.join(top_rest)}")
    if stand_ins:
        notes.append(f"read without unpickling {', '.join(stand_ins)} (inert stand-ins)")
    log.info("init %s: %s", path, "; ".join(notes))
    return sorted(classifier + rest)


def _check_pos_embed(encoder: nn.Module, picked: dict, path) -> None:
    """Keep the model's own position table when the file's is another (or no known) kind; warn."""
    own, theirs = getattr(encoder, "pos_embed", None), picked.get("pos_embed")
    if own is None or theirs is None or tuple(theirs.shape) != tuple(own.shape):
        return                                           # missing / other shape: the strict load says so
    if torch.allclose(theirs.detach().float(), own.detach().float().cpu(), rtol=0.0, atol=1e-4):
        return
    grid = tuple(encoder.grid_size)
    own_kind = getattr(encoder, "pos_embed_kind", None) or identify_pos_embed(own, grid) or "unknown"
    file_kind = identify_pos_embed(theirs, grid)
    if file_kind is not None:
        log.warning("init %s: the file's position table is %s but this model's is %s (model.pos_embed); "
                    "kept the model's %s table. Position tables are fixed, not learned; set "
                    "model.pos_embed: %s to fine-tune with the file's.", path, file_kind, own_kind, own_kind,
                    file_kind)
    else:
        diff = float((theirs.detach().float() - own.detach().float().cpu()).abs().max())
        log.warning("init %s: the file's position table is neither 3d_sincos nor 2d_legacy for the %s patch "
                    "grid (max abs difference %.3g from this model's %s table); kept the model's %s table.",
                    path, "x".join(map(str, grid)), diff, own_kind, own_kind)
    picked["pos_embed"] = own.detach().clone()
