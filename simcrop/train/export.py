"""Encoder weights in and out, under the official (timm) key names.

`export_encoder` turns a training checkpoint into `{"model": encoder state_dict, "step", "config"}`
whose keys are the official ViT backbone names: `cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.N.*`, `norm.*` (what our `VisionTransformer3D` loads strictly; the official downstream models
load it non-strictly, see `load_encoder_init` and the README). The encoder's prefix inside the training
model (`encoder.`, `mae.encoder.`, `module.encoder.`, ...) is found from the keys, not assumed.

`load_encoder_init` (`--init`) reads, besides our own files, the MAE-style checkpoints of the authors'
pre-training code (`{"model", "optimizer", "epoch", "scaler", "args"}`, decoder and text keys beside the
encoder's at the top level, an `argparse.Namespace` under `args`) without running pickled code.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch import nn

from simcrop.model.pos_embed import identify_pos_embed
from simcrop.train.checkpoint import read_checkpoint, save_torch

log = logging.getLogger(__name__)
ANCHOR = "patch_embed.proj.weight"
IGNORED_INIT_PREFIXES = ("head.", "fc_norm.")   # classifier heads of official fine-tuned weights
# ViT parameter names (after the encoder prefix): what `--init` takes from a file; the rest is left out.
ENCODER_NAMES = ("cls_token", "pos_embed")
ENCODER_PREFIXES = ("patch_embed.", "blocks.", "norm.")


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


def export_encoder(checkpoint_path, out_path) -> Path:
    """Write `{"model": encoder state_dict (official names), "step", "config"}` atomically to out_path."""
    ckpt = read_checkpoint(checkpoint_path)
    state = encoder_state(ckpt["model"])
    payload = {"model": {k: v.clone() for k, v in state.items()}, "step": ckpt.get("step", 0),
               "config": ckpt.get("config", {})}
    out_path = Path(out_path)
    save_torch(payload, out_path)
    log.info("exported %d encoder tensors from %s (step %s) to %s", len(state), checkpoint_path,
             payload["step"], out_path)
    return out_path


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
