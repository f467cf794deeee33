"""Masked image modelling on 3D CT patches (MAE, He et al. 2022), the image half of SimCroP.

`MaskedAutoencoder3D.forward` returns its own loss, prediction and mask (the model owns its objective);
`forward_encoder` is the part the SimCroP model reuses: it masks, encodes the visible patches and
hands back the latent with the indices that place each visible token in the grid.

Loss: mean squared error over the voxels of masked patches only. The authors' code averages the
masked squared error over *all* voxels (visible ones count as zero), i.e. ours times (1 - keep
fraction); the two differ by a constant factor only.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from simcrop.model.pos_embed import build_pos_embed
from simcrop.model.vit3d import Block, VisionTransformer3D, init_weights


def random_masking(x_tokens: torch.Tensor, mask_ratio: float = 0.75,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw a fresh random mask per sample by sorting uniform noise (MAE).

    x_tokens: (B, N, ...) only its first two sizes and device are used.
    generator: on x_tokens' device, for reproducible masks.
    Returns ids_keep (B, K) int64, the kept patch indices, K = int(N * (1 - mask_ratio)) for every sample;
    mask (B, N) float, 1 = masked, 0 = visible, in grid order;
    ids_restore (B, N) int64, so that gathering [kept tokens, then masked tokens] with it restores grid order.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1); got {mask_ratio}")
    B, N = x_tokens.shape[:2]
    keep = int(N * (1.0 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no patch out of {N}")
    noise = torch.rand(B, N, generator=generator, device=x_tokens.device)
    ids_shuffle = torch.argsort(noise, dim=1)       # ascending: the smallest noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(B, N, device=x_tokens.device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], torch.gather(mask, 1, ids_restore), ids_restore


class MAEDecoder(nn.Module):
    """Light transformer that fills masked positions with a learned token and predicts their voxels."""

    def __init__(self, grid_size: tuple[int, int, int], encoder_dim: int, decoder_dim: int = 768,
                 depth: int = 4, num_heads: int = 16, patch_voxels: int = 16 * 16 * 8, mlp_ratio: float = 4.0,
                 pos_embed: str = "3d_sincos", norm_eps: float = 1e-6):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_patches = math.prod(self.grid_size)
        self.embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", build_pos_embed(pos_embed, self.grid_size, decoder_dim))
        self.blocks = nn.ModuleList(Block(decoder_dim, num_heads, mlp_ratio, norm_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(decoder_dim, eps=norm_eps)
        self.pred = nn.Linear(decoder_dim, patch_voxels)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_weights)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent: (B, 1 + K, C_enc) CLS first; ids_restore: (B, N) -> pred (B, N, patch_voxels)."""
        x = self.embed(latent)                                          # (B, 1 + K, C_dec)
        B, K = x.shape[0], x.shape[1] - 1
        N = ids_restore.shape[1]
        if N != self.num_patches:
            raise ValueError(f"ids_restore has {N} patches, decoder grid has {self.num_patches}")
        fill = self.mask_token.expand(B, N - K, -1).to(x.dtype)
        patches = torch.cat([x[:, 1:], fill], dim=1)                    # (B, N, C_dec), shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x[:, 1:]))


class MaskedAutoencoder3D(nn.Module):
    """Encoder on visible patches + decoder on the full grid, trained to rebuild masked voxels."""

    def __init__(self, encoder: VisionTransformer3D, decoder: MAEDecoder, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = False):
        super().__init__()
        if decoder.num_patches != encoder.num_patches:
            raise ValueError(f"decoder grid {decoder.grid_size} != encoder grid {encoder.grid_size}")
        if decoder.pred.out_features != encoder.patch_voxels:
            raise ValueError(f"decoder predicts {decoder.pred.out_features} voxels per patch, "
                             f"encoder patches hold {encoder.patch_voxels}")
        self.encoder, self.decoder = encoder, decoder
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Mask and encode. imgs: (B, 1, H, W, D) float in [-1, 1].

        Returns latent (B, 1 + K, C) after the encoder norm, CLS at 0, then the visible patches in
        ids_keep order (latent[:, 1:] are the tokens alignment and fusion use); ids_keep (B, K);
        mask (B, N) 1 = masked; ids_restore (B, N).
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        B = imgs.shape[0]
        ids_keep, mask, ids_restore = random_masking(
            imgs.new_empty(B, self.encoder.num_patches, 0), ratio, generator)
        latent = self.encoder.forward_features(imgs, ids_keep=ids_keep)
        return dict(latent=latent, ids_keep=ids_keep, mask=mask, ids_restore=ids_restore)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """imgs: (B, 1, H, W, D); pred: (B, N, P); mask: (B, N) 1 = masked -> scalar MSE on masked patches."""
        target = self.encoder.patchify(imgs).to(pred.dtype)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = ((pred - target) ** 2).mean(dim=-1)                 # (B, N)
        return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)   # ratio 0 masks nothing: loss 0

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """imgs: (B, 1, H, W, D) float in [-1, 1] -> dict(loss, pred (B, N, P), mask (B, N) 1 = masked,
        latent (B, 1 + K, C), ids_keep (B, K), ids_restore (B, N))."""
        out = self.forward_encoder(imgs, mask_ratio, generator)
        out["pred"] = self.decoder(out["latent"], out["ids_restore"])
        out["loss"] = self.forward_loss(imgs, out["pred"], out["mask"])
        return out


def build_mae(encoder: VisionTransformer3D, decoder_dim: int = 768, decoder_depth: int = 4,
              decoder_heads: int = 16, mask_ratio: float = 0.75, norm_pix_loss: bool = False,
              pos_embed: str | None = None) -> MaskedAutoencoder3D:
    """Wrap an encoder with a decoder sized to its grid and patches (pos_embed defaults to the encoder's)."""
    decoder = MAEDecoder(encoder.grid_size, encoder.embed_dim, decoder_dim, decoder_depth, decoder_heads,
                         encoder.patch_voxels, pos_embed=pos_embed or encoder.pos_embed_kind,
                         norm_eps=encoder.norm.eps)
    return MaskedAutoencoder3D(encoder, decoder, mask_ratio, norm_pix_loss)
