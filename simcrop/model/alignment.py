"""Similarity-driven alignment (method.md §3): each sentence pools its top-K most similar visible patches.

Notation: Ns sentences over the batch (sample-major, sentence order within a report), B volumes, N visible
patches per volume, D shared width, K patches kept, τ temperature; s(i) is the volume of sentence i.

    u_i   = normalise(sentence feature i)                 (Ns, D)
    z_bn  = normalise(projected visible patch n of b)      (B, N, D)
    T_i(b) = top-K of {u_i · z_bn}_n                        hard choice, no gradient through it
    a_i(b) = normalise(mean_{n ∈ T_i(b)} z_bn)               the sentence's pooled region in volume b
    a_i   = a_i(s(i))

The pooled feature is re-normalised so that logits are cosines over τ, as in CLIP-style InfoNCE.
Gradients reach u_i and exactly the chosen patches (the kernel's `pooled` is a gather).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simcrop.model.objectives import NEGATIVES
from simcrop_kernels import topk_similarity


def sentence_features(token_feats: Tensor, token_sentence: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of each sentence's token features.

    token_feats (B, L, H) float; token_sentence (B, L) int64, sentence index within the report (0..n_b - 1,
    contiguous) or -1 for tokens of no sentence. Returns sentences (Ns, H), Ns = Σ_b n_b, ordered by sample
    then sentence, and sentence_to_sample (Ns,) int64.
    """
    if token_feats.shape[:2] != token_sentence.shape:
        raise ValueError(f"token_feats {tuple(token_feats.shape)} and token_sentence "
                         f"{tuple(token_sentence.shape)} disagree on (B, L)")
    B, _, H = token_feats.shape
    n_per = (token_sentence.max(dim=1).values + 1).clamp(min=0)                 # (B,)
    first = torch.cumsum(n_per, 0) - n_per                                     # global index of sentence 0
    Ns = int(n_per.sum())
    valid = token_sentence >= 0
    gid = (token_sentence + first[:, None])[valid]                             # (T,)
    sums = token_feats.new_zeros(Ns, H).index_add(0, gid, token_feats[valid])
    counts = torch.zeros(Ns, device=token_feats.device, dtype=token_feats.dtype).index_add(
        0, gid, torch.ones_like(gid, dtype=token_feats.dtype))
    if bool((counts == 0).any()):
        raise ValueError("a sentence index has no tokens: token_sentence must number sentences 0..n-1 "
                         "contiguously within each report")
    s2s = torch.repeat_interleave(torch.arange(B, device=token_feats.device), n_per)
    return sums / counts[:, None], s2s


def _zero_like_graph(*tensors: Tensor) -> Tensor:
    """A zero loss still attached to the graph (DDP expects every trainable parameter to get a gradient)."""
    return sum(t.sum() * 0.0 for t in tensors)


def similarity_alignment_loss(sentences: Tensor, patches: Tensor, sentence_to_volume: Tensor, k: int,
                              temperature: float = 0.07, negatives: str = "report",
                              patch_mask: Tensor | None = None, backend: str = "auto",
                              select_patches: Tensor | None = None, same_text: Tensor | None = None) -> dict:
    """Two-way InfoNCE between sentences and their pooled top-K patches, summed over both directions.

    sentences (Ns, D), patches (B, N, D) float (normalised here); sentence_to_volume (Ns,) int64 = s(i).

    negatives="report" (default; the other sentences of the same report): with
        ℓ_ij = u_i · a_j / τ  for s(j) = s(i)  (other reports masked out),
        L_s→a(i) = -log softmax_j(ℓ_i·)[i],   L_a→s(i) = -log softmax_j(ℓ_·i)[i],
        loss = mean over reports r with n_r ≥ 2 of  mean_{i ∈ r} (L_s→a(i) + L_a→s(i)).
    A report with one sentence has no negative and contributes nothing (not even to the average); a
    batch with no report of ≥ 2 sentences gives a zero loss still attached to the graph.

    negatives="batch" (every sentence against every volume; kernel mode "all"): with
        x_iv = u_i · a_i(v) / τ   (Ns, V): sentence i against its own top-K pooled region of volume v,
        L_s→v(i) = -log [ exp x_i,s(i) / Σ_v exp x_iv ]
        L_v→s(i) = -log [ exp x_i,s(i) / (exp x_i,s(i) + Σ_{j: s(j) ≠ s(i)} exp x_j,s(i)) ]
        loss = mean_i L_s→v(i) + mean_i L_v→s(i).
    L_v→s asks volume s(i) to pick sentence i out of the sentences of other reports; the other sentences
    of its own report are also positives and are left out of its denominator. One volume: zero loss.

    negatives="both" (an ablation, not the authors' form): the sum of the two losses above, so the
    within-report contrast cannot be met without telling volumes apart. Returns the report form's dict
    with that sum as its loss (and `loss_report`, `loss_batch`).

    same_text (Ns, Ns) bool, optional, batch negatives only: True where sentence j of another report says
    what sentence i says ("No pleural effusion." in both). Such a pair is not a negative: volume s(j) leaves
    sentence i's denominator and sentence j leaves volume s(i)'s. None: every other volume and sentence is
    a negative (the authors' form). A sentence whose every other volume is excluded adds zero to L_s→v.

    select_patches (B, N, D), optional: the features the top-K choice is made on (e.g. with each grid
    position's mean removed, `model.topk_selection: position_centred`); the pooled a_i are still means of
    the chosen `patches`; the choice scores u_i · select as given (not re-normalised). None: choose on
    `patches` (the authors' form).

    Returns dict(loss scalar, indices (Ns, K) own top-K patch indices, pooled (Ns, D) a_i,
    logits (Ns, Ns) [report] or (Ns, V) [batch], n_terms: sentences that contributed).
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}; got {negatives!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    # float32 throughout, also under bf16 autocast: logits reach 1/τ ≈ 14, where bf16 steps by 0.06
    with torch.autocast(device_type=sentences.device.type, enabled=False):
        if negatives == "both":
            own = _alignment_loss(sentences, patches, sentence_to_volume, k, temperature, "report", patch_mask,
                                  backend, select_patches)
            batch = _alignment_loss(sentences, patches, sentence_to_volume, k, temperature, "batch", patch_mask,
                                    backend, select_patches, same_text)
            return dict(own, loss=own["loss"] + batch["loss"], loss_report=own["loss"], loss_batch=batch["loss"])
        return _alignment_loss(sentences, patches, sentence_to_volume, k, temperature, negatives, patch_mask,
                               backend, select_patches, same_text if negatives == "batch" else None)


def _topk(u, z, k, mode, s2v, patch_mask, backend, select):
    """topk_similarity on z, or the choice made on `select` with the pooled mean taken over z."""
    if select is None:
        return topk_similarity(u, z, k, mode=mode, sentence_to_volume=s2v, patch_mask=patch_mask, backend=backend)
    # not re-normalised: a patch that looks like every volume's patch at its place scores near 0
    res = topk_similarity(u, select.float(), k, mode=mode, sentence_to_volume=s2v,
                          patch_mask=patch_mask, return_pooled=False, backend=backend)
    if mode == "own":
        pooled = z[s2v[:, None], res.indices].mean(1)                             # (Ns, D)
    else:
        V = z.shape[0]
        pooled = z[torch.arange(V, device=z.device)[None, :, None], res.indices].mean(2)   # (Ns, V, D)
    return res._replace(pooled=pooled)


def _alignment_loss(sentences, patches, sentence_to_volume, k, temperature, negatives, patch_mask, backend,
                    select=None, same_text=None):
    u = F.normalize(sentences.float(), dim=-1)
    z = F.normalize(patches.float(), dim=-1)
    s2v = sentence_to_volume.to(device=u.device, dtype=torch.long)
    Ns = u.shape[0]
    if negatives == "report":
        res = _topk(u, z, k, "own", s2v, patch_mask, backend, select)
        a = F.normalize(res.pooled, dim=-1)                                     # (Ns, D)
        same = s2v[:, None] == s2v[None, :]
        logits = (u @ a.T / temperature).masked_fill(~same, float("-inf"))     # (Ns, Ns)
        n_in_report = same.sum(1)                                               # (Ns,)
        counts = torch.bincount(s2v, minlength=patches.shape[0])
        reports = int((counts >= 2).sum())
        out = dict(indices=res.indices, pooled=a, logits=logits, n_terms=int((n_in_report >= 2).sum()))
        if reports == 0:
            return dict(out, loss=_zero_like_graph(u, res.pooled))
        target = torch.arange(Ns, device=u.device)
        per = (F.cross_entropy(logits, target, reduction="none")
               + F.cross_entropy(logits.T, target, reduction="none"))         # (Ns,)
        weight = torch.where(n_in_report >= 2, 1.0 / (n_in_report.float() * reports), torch.zeros_like(per))
        return dict(out, loss=(per * weight).sum())

    V = patches.shape[0]
    res = _topk(u, z, k, "all", None, patch_mask, backend, select)
    pooled = F.normalize(res.pooled, dim=-1)                                    # (Ns, V, D)
    x = torch.einsum("sd,svd->sv", u, pooled) / temperature                     # (Ns, V)
    own = torch.arange(Ns, device=u.device)
    out = dict(indices=res.indices[own, s2v], pooled=pooled[own, s2v], logits=x, n_terms=Ns if V > 1 else 0)
    if V < 2:
        return dict(out, loss=_zero_like_graph(u, res.pooled))
    same_other = (s2v[:, None] == s2v[None, :]) & ~torch.eye(Ns, dtype=torch.bool, device=u.device)
    cols = x[:, s2v]                                          # (Ns_j, Ns_i): x_j,s(i)
    if same_text is not None:                                 # false negatives: the same statement elsewhere
        twin = same_text.to(u.device) & ~(s2v[:, None] == s2v[None, :])           # (Ns_i, Ns_j)
        twin_volume = (twin.float() @ F.one_hot(s2v, V).float()) > 0               # (Ns_i, V)
        x = x.masked_fill(twin_volume, float("-inf"))
        same_other = same_other | twin.T
    s2v_loss = F.cross_entropy(x, s2v)
    v2s_loss = F.cross_entropy(cols.masked_fill(same_other, float("-inf")).T, own)
    return dict(out, loss=s2v_loss + v2s_loss)
