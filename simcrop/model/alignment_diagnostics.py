"""Alignment diagnostics while pre-training: where do the sentences' top-K patches land?

Computed on the training batch itself (no extra forward pass, no gradient) when the batch carries the
synthetic corpus's label maps, cropped and flipped with the image (`pretrain.diagnostics`):

    lesion_hit_share     share of lesion sentences (whose lesion has a visible patch) with at least one
                         of their top-K patches on that lesion: grounding while training
    lesion_hit_fraction  mean share of those sentences' top-K patches on their lesion
    picks_air / picks_body / picks_lung   share of all picks whose patch is mostly air outside the body,
                         body tissue (airway included) or lung (organ map labels)
    distinct_picks       per report with >= 2 sentences, distinct patches picked over n_sentences x K
                         (1: no two sentences share a patch; small: the picks have collapsed), averaged

Without an organ map (real data) the lung share is unknown: lung counts as air if below -500 HU.
"""
from __future__ import annotations

from typing import Sequence

import torch

AIR, BODY, LUNG = 0, 1, 2
CLASS_NAMES = ("air", "body", "lung")
LUNG_LABELS = (1, 2)               # simcrop.data.synthetic ORGAN_LABELS: right_lung, left_lung
AIR_LEVEL = -0.5                   # scaled HU (-500 HU): below it, outside the lungs, is air


def _patch_view(volume: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """(B, X, Y, Z) → (B, N, voxels per patch), patches in the ViT's token order (x-major, z-minor)."""
    B, X, Y, Z = volume.shape
    ph, pw, pd = (int(p) for p in patch_size)
    v = volume.reshape(B, X // ph, ph, Y // pw, pw, Z // pd, pd)
    return v.permute(0, 1, 3, 5, 2, 4, 6).reshape(B, -1, ph * pw * pd)


def patch_classes(image: torch.Tensor, organ: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """image (B, X, Y, Z) scaled HU, organ (B, X, Y, Z) int labels (-1: unknown) → (B, N) int64, each
    patch's majority class: AIR (outside-body air), BODY or LUNG."""
    lung = torch.isin(organ, torch.tensor(LUNG_LABELS, device=organ.device))
    air = (image < AIR_LEVEL) & ~lung & (organ <= 0)         # organ 0: no organ; -1: no map
    voxel = torch.full_like(organ, BODY, dtype=torch.long)
    voxel[air] = AIR
    voxel[lung] = LUNG
    counts = torch.nn.functional.one_hot(_patch_view(voxel, patch_size), 3).sum(2)     # (B, N, 3)
    return counts.argmax(-1)


def lesion_patch_masks(lesion_map: torch.Tensor, volume_of: torch.Tensor, lesion_ids: Sequence[Sequence[int]],
                       patch_size: Sequence[int]) -> torch.Tensor:
    """(S, N) bool: the patches of sentence s's volume holding a voxel of any of its lesion ids."""
    patches = _patch_view(lesion_map, patch_size)                                 # (B, N, P)
    out = torch.zeros(len(lesion_ids), patches.shape[1], dtype=torch.bool, device=lesion_map.device)
    for s, (b, ids) in enumerate(zip(volume_of.tolist(), lesion_ids)):
        out[s] = torch.isin(patches[b], torch.as_tensor(list(ids), device=lesion_map.device)).any(-1)
    return out


@torch.no_grad()
def alignment_diagnostics(indices: torch.Tensor, ids_keep: torch.Tensor, sentence_to_volume: torch.Tensor,
                          sentence_lesions: Sequence[Sequence[Sequence[int]]], image: torch.Tensor,
                          lesion_map: torch.Tensor, organ_map: torch.Tensor,
                          patch_size: Sequence[int]) -> dict[str, float]:
    """indices (Ns, K) top-K among each sentence's visible patches; ids_keep (B, Nvis) their grid index;
    sentence_to_volume (Ns,); sentence_lesions: per sample, per kept sentence, its lesion ids (batch order);
    image (B, 1, X, Y, Z); lesion_map, organ_map (B, X, Y, Z). Returns the floats named in the module doc
    (NaN where nothing qualifies)."""
    s2v = sentence_to_volume.long()
    picks = torch.gather(ids_keep[s2v], 1, indices.long())                     # (Ns, K) grid indices
    classes = patch_classes(image[:, 0], organ_map, patch_size)                 # (B, N)
    picked = classes[s2v[:, None], picks]                                       # (Ns, K)
    out = {f"picks_{name}": float((picked == c).float().mean()) for c, name in enumerate(CLASS_NAMES)}

    flat = [ids for per_sample in sentence_lesions for ids in per_sample]
    named = [s for s, ids in enumerate(flat) if ids]
    hit_share = hit_fraction = float("nan")
    if named:
        rows = torch.tensor(named, device=picks.device)
        lesion = lesion_patch_masks(lesion_map, s2v[rows], [flat[s] for s in named], patch_size)   # (S, N)
        visible = torch.zeros_like(lesion)
        visible.scatter_(1, ids_keep[s2v[rows]], True)
        seen = (lesion & visible).any(1)                                        # lesion has a visible patch
        if bool(seen.any()):
            on = torch.gather(lesion, 1, picks[rows])[seen].float()             # (S', K)
            hit_share, hit_fraction = float(on.any(1).float().mean()), float(on.mean())

    distinct = []
    for b in torch.unique(s2v).tolist():
        mine = picks[s2v == b]
        if mine.shape[0] >= 2:
            distinct.append(torch.unique(mine).numel() / mine.numel())
    out.update(lesion_hit_share=hit_share, lesion_hit_fraction=hit_fraction,
               distinct_picks=sum(distinct) / len(distinct) if distinct else float("nan"))
    return out
