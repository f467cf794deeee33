"""Baselines trained in the same framework as SimCroP (method.md §5): MAE only, global CLIP-style, and a
supervised upper bound for the probe (the same ViT trained on the manifest's labels).

All take the same `ReportBatcher` batch and return `{"loss", "losses"}` like `SimCroP`, and expose
`.encoder` (the VisionTransformer3D) for export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simcrop.data.labels import CTRATE_LABELS
from simcrop.model.losses import combine
from simcrop.model.mae import MaskedAutoencoder3D, random_masking
from simcrop.model.projection import ProjectionHead
from simcrop.model.vit3d import VisionTransformer3D
from simcrop.text.encoder import FrozenTextEncoder


class MAEPretrain(nn.Module):
    """Masked image modelling only; losses = {"image"}."""

    def __init__(self, mae: MaskedAutoencoder3D):
        super().__init__()
        self.mae = mae

    @property
    def encoder(self) -> VisionTransformer3D:
        return self.mae.encoder

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        return combine({"image": self.mae(batch["image"], generator=generator)["loss"]}, {"image": 1.0})


def clip_loss(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over the batch, averaged over both directions (CLIP / CT-CLIP).

    image, text (B, D) float, paired by row (normalised here). B = 1 gives 0 (no negative).
    """
    with torch.autocast(device_type=image.device.type, enabled=False):    # float32 logits under autocast
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        logits = image @ text.T / temperature                                  # (B_img, B_txt)
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ClipPretrain(nn.Module):
    """CT-CLIP-like global contrastive baseline; losses = {"clip"}.

    Image: mean of the visible patch tokens (MAE masking at mask_ratio; 0 encodes every patch) → head.
    Text: mean of the frozen encoder's features over findings tokens (`findings_mask`) → head.
    Fixed temperature from the config. Reports repeated in a batch (reconstructions of one scan) count
    as negatives of each other, as in CT-CLIP.
    """

    def __init__(self, encoder: VisionTransformer3D, text_encoder: FrozenTextEncoder, proj_dim: int = 256,
                 temperature: float = 0.07, mask_ratio: float = 0.75):
        super().__init__()
        self._encoder = encoder
        self.text_encoder = text_encoder
        self.image_head = ProjectionHead(encoder.embed_dim, proj_dim)
        self.text_head = ProjectionHead(text_encoder.hidden_size, proj_dim)
        self.temperature, self.mask_ratio = temperature, mask_ratio

    @property
    def encoder(self) -> VisionTransformer3D:
        return self._encoder

    def image_features(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """imgs (B, 1, H, W, D) → (B, proj_dim): head(mean of visible patch tokens)."""
        ids_keep = None
        if self.mask_ratio > 0:
            ids_keep, _, _ = random_masking(imgs.new_empty(imgs.shape[0], self._encoder.num_patches, 0),
                                            self.mask_ratio, generator)
        latent = self._encoder.forward_features(imgs, ids_keep=ids_keep)
        return self.image_head(latent[:, 1:].mean(dim=1))

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      findings_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids, mask, findings_mask bool → (B, proj_dim): head(mean of findings token features)."""
        tokens = self.text_encoder(input_ids, attention_mask)                  # (B, L, H)
        weight = findings_mask.to(tokens.dtype)[..., None]
        return self.text_head((tokens * weight).sum(1) / weight.sum(1).clamp(min=1.0))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        image = self.image_features(batch["image"], generator)
        text = self.text_features(batch["input_ids"], batch["attention_mask"], batch["findings_mask"])
        return combine({"clip": clip_loss(image, text, self.temperature)}, {"clip": 1.0})


class SupervisedPretrain(nn.Module):
    """Supervised upper bound for the linear probe; losses = {"supervised"}.

    The same ViT on every patch (no masking) → mean of the patch tokens → LayerNorm → Linear(n_labels),
    binary cross-entropy with logits against `batch["labels"]` (B, n_labels) float 0/1 (multi-hot, the
    order of `PretrainDataset(labels=True).label_names`). Only `.encoder` is exported; the head is not.
    n_labels defaults to CT-RATE's 18 abnormality labels.
    """

    def __init__(self, encoder: VisionTransformer3D, n_labels: int = len(CTRATE_LABELS)):
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"n_labels must be >= 1; got {n_labels}")
        self._encoder = encoder
        self.n_labels = int(n_labels)
        self.fc_norm = nn.LayerNorm(encoder.embed_dim)
        self.label_head = nn.Linear(encoder.embed_dim, self.n_labels)

    @property
    def encoder(self) -> VisionTransformer3D:
        return self._encoder

    def logits(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs (B, 1, H, W, D) → (B, n_labels) logits from the mean of all patch tokens."""
        latent = self._encoder.forward_features(imgs)
        return self.label_head(self.fc_norm(latent[:, 1:].mean(dim=1)))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        if "labels" not in batch:
            raise ValueError("the supervised objective needs batch['labels']: build the dataset with "
                             "PretrainDataset(..., labels=True)")
        targets = batch["labels"]
        if targets.ndim != 2 or targets.shape[1] != self.n_labels:
            raise ValueError(f"batch['labels'] has shape {tuple(targets.shape)}; the supervised head has "
                             f"{self.n_labels} outputs (expected (B, {self.n_labels}))")
        logits = self.logits(batch["image"])
        with torch.autocast(device_type=logits.device.type, enabled=False):     # float32 loss under autocast
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float())
        return combine({"supervised": loss}, {"supervised": 1.0})
