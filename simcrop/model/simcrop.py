"""SimCroP pre-training: masked image modelling + similarity-driven alignment + report reconstruction.

    image ──mask──► ViT (visible patches p) ──► MAE decoder ──► L_image (masked voxels)
                         │ patch head                         
                         ▼                                    
    report ──► frozen text encoder ──► token head ──► sentence means u ──► top-K pooling ──► L_align
    masked report ──► frozen text encoder ──► fusion(·, p) ──► text decoder ──► L_report (MLM)

`forward(batch)` takes a `simcrop.text.batch.ReportBatcher` batch and returns
`{"loss": Σ w·L, "losses": {"image", "align", "report": detached}}`; a loss with weight 0 is not computed
and is absent from `losses`. `simcrop.model.factory` builds it (and the baselines) from a ModelConfig.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from simcrop.model.alignment import sentence_features, similarity_alignment_loss
from simcrop.model.alignment_diagnostics import alignment_diagnostics
from simcrop.model.fusion import FusionLayer
from simcrop.model.losses import combine
from simcrop.model.mae import MaskedAutoencoder3D
from simcrop.model.objectives import LOSS_NAMES, MLM_LOSS_ON, NEGATIVES, TOPK_SELECTIONS
from simcrop.model.projection import ProjectionHead
from simcrop.model.text_decoder import TextDecoder
from simcrop.text.encoder import FrozenTextEncoder

log = logging.getLogger(__name__)


class SimCroP(nn.Module):
    """The three SimCroP losses over one (image, report) batch."""

    def __init__(self, mae: MaskedAutoencoder3D, text_encoder: FrozenTextEncoder, proj_dim: int = 256,
                 topk: int = 32, temperature: float = 0.07, negatives: str = "report",
                 mlm_loss_on: str = "masked", text_decoder_layers: int = 6, text_decoder_heads: int = 6,
                 weights: dict[str, float] | None = None, fusion_heads: int | None = None,
                 topk_selection: str = "features", position_momentum: float = 0.99,
                 same_text_cos: float = 0.0):
        super().__init__()
        if topk_selection not in TOPK_SELECTIONS:
            raise ValueError(f"model.topk_selection must be one of {TOPK_SELECTIONS}; got {topk_selection!r}")
        if negatives not in NEGATIVES:
            raise ValueError(f"model.negatives must be one of {NEGATIVES}; got {negatives!r}")
        if mlm_loss_on not in MLM_LOSS_ON:
            raise ValueError(f"model.mlm_loss_on must be one of {MLM_LOSS_ON}; got {mlm_loss_on!r}")
        self.weights = dict(weights or {name: 1.0 for name in LOSS_NAMES})
        self.topk, self.temperature, self.negatives, self.mlm_loss_on = topk, temperature, negatives, mlm_loss_on
        self.mae = mae
        self.text_encoder = text_encoder
        width, text_width = mae.encoder.embed_dim, text_encoder.hidden_size
        self.topk_selection, self.position_momentum = topk_selection, float(position_momentum)
        if not 0.0 <= same_text_cos <= 1.0:
            raise ValueError(f"model.same_text_cos must be in [0, 1] (0: off); got {same_text_cos}")
        self.same_text_cos = float(same_text_cos)
        if self.weights["align"] > 0:
            self.patch_head = ProjectionHead(width, proj_dim)
            if topk_selection == "position_centred":   # running mean of each grid position's feature
                self.register_buffer("position_mean", torch.zeros(mae.encoder.num_patches, proj_dim))
            self.token_head = ProjectionHead(text_width, proj_dim)
        if self.weights["report"] > 0:
            self.fusion = FusionLayer(text_width, width, num_heads=fusion_heads or text_decoder_heads)
            pad_id = text_encoder.tokenizer.pad_token_id or 0
            self.text_decoder = TextDecoder(text_encoder.vocab_size, text_width, text_decoder_layers,
                                            text_decoder_heads, pad_token_id=pad_id)
        if self.weights["image"] == 0:      # unused: keep it out of the optimiser (and of DDP's unused set)
            mae.decoder.requires_grad_(False)
        self._warned_k = False

    @property
    def encoder(self):
        """The VisionTransformer3D (export: `{"model": model.encoder.state_dict()}`)."""
        return self.mae.encoder

    def _k(self, visible: int) -> int:
        if self.topk <= visible:
            return self.topk
        if not self._warned_k:
            log.warning("model.topk %d exceeds the %d visible patches; using %d", self.topk, visible, visible)
            self._warned_k = True
        return visible

    @torch.no_grad()
    def _selection(self, z: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor | None:
        """What the top-K choice is made on. "features": z itself (None). "position_centred": z (normalised)
        minus the running mean of its grid position over past batches, so a sentence cannot pick patches by
        where they are rather than what they show; the mean is then updated with this batch (training)."""
        if self.topk_selection == "features":
            return None
        zn = F.normalize(z.float(), dim=-1)                                      # (B, Nvis, D)
        select = zn - self.position_mean[ids_keep]
        if self.training:
            flat, ids = zn.reshape(-1, zn.shape[-1]), ids_keep.reshape(-1)
            sums = torch.zeros_like(self.position_mean).index_add_(0, ids, flat)
            counts = torch.bincount(ids, minlength=self.position_mean.shape[0])
            seen = counts > 0
            m = self.position_momentum
            self.position_mean[seen] = m * self.position_mean[seen] + (1 - m) * sums[seen] / counts[seen, None]
        return select

    @torch.no_grad()
    def _same_text(self, tokens: torch.Tensor, token_sentence: torch.Tensor) -> torch.Tensor | None:
        """(Ns, Ns) True where two sentences say the same thing: cosine of their frozen text-encoder means
        above model.same_text_cos (batch negatives only; None when off). Frozen features, so what counts as
        the same statement does not drift with training."""
        if self.same_text_cos <= 0 or self.negatives == "report":
            return None
        raw = F.normalize(sentence_features(tokens.float(), token_sentence)[0], dim=-1)
        return raw @ raw.T > self.same_text_cos

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """batch: a ReportBatcher output (tensors on the model's device); generator: for the image mask."""
        w, diagnostics = self.weights, None
        enc = self.mae.forward_encoder(batch["image"], generator=generator)
        patches = enc["latent"][:, 1:]                                         # (B, K_vis, C)
        losses: dict[str, torch.Tensor] = {}
        if w["image"] > 0:
            pred = self.mae.decoder(enc["latent"], enc["ids_restore"])
            losses["image"] = self.mae.forward_loss(batch["image"], pred, enc["mask"])
        if w["align"] > 0:
            tokens = self.text_encoder(batch["input_ids"], batch["attention_mask"])   # (B, L, H)
            sent, s2v = sentence_features(self.token_head(tokens), batch["token_sentence"])
            z = self.patch_head(patches)
            out = similarity_alignment_loss(sent, z, s2v, self._k(patches.shape[1]), self.temperature,
                                            self.negatives, select_patches=self._selection(z, enc["ids_keep"]),
                                            same_text=self._same_text(tokens, batch["token_sentence"]))
            losses["align"] = out["loss"]
            if "lesion_map" in batch:         # where the picks land (pretrain.diagnostics)
                diagnostics = alignment_diagnostics(out["indices"], enc["ids_keep"], s2v, batch["sentence_lesions"],
                                                    batch["image"], batch["lesion_map"], batch["organ_map"],
                                                    self.mae.encoder.patch_size)
        if w["report"] > 0:
            masked = self.text_encoder(batch["mlm_input_ids"], batch["attention_mask"])  # (B, L, H)
            fused = self.fusion(masked, patches, batch["attention_mask"])
            labels = batch["mlm_labels"] if self.mlm_loss_on == "masked" else batch["mlm_all_labels"]
            # "all" follows the authors' later code: every position, padding included (as labels only;
            # padding stays masked as attention keys)
            losses["report"] = self.text_decoder(fused, batch["attention_mask"], labels)["loss"]
        result = combine(losses, w)
        if diagnostics is not None:
            result["diagnostics"] = diagnostics
        return result
