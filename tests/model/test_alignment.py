from __future__ import annotations

import math

import pytest
import torch

from simcrop.model.alignment import sentence_features, similarity_alignment_loss


def _norm(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _hand_pooled(u, z, s2v, k):
    """Top-K by an explicit sort per sentence, mean, re-normalise: lists of (D,) tensors and index sets."""
    pooled, chosen = [], []
    for i in range(len(u)):
        v = int(s2v[i])
        sims = [(float(u[i] @ z[v, n]), n) for n in range(z.shape[1])]
        top = [n for _, n in sorted(sims, key=lambda t: (-t[0], t[1]))[:k]]
        chosen.append(sorted(top))
        pooled.append(_norm(sum(z[v, n] for n in top) / k))
    return pooled, chosen


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def test_closed_form_two_sentences():
    """u1 = e1, u2 = e2; patches e1, e1, e2, e2, e3, e4 → a1 = e1, a2 = e2; logits diag(1/τ)."""
    eye = torch.eye(4)
    patches = torch.stack([eye[0], eye[0], eye[1], eye[1], eye[2], eye[3]])[None]          # (1, 6, 4)
    for tau in (1.0, 0.5):
        out = similarity_alignment_loss(eye[:2], patches, torch.tensor([0, 0]), k=2, temperature=tau)
        expected = 2 * math.log(1 + math.exp(-1 / tau))            # both directions, mean over 2 sentences
        assert float(out["loss"]) == pytest.approx(expected, rel=1e-6)
        assert out["indices"].sort(1).values.tolist() == [[0, 1], [2, 3]]


def test_report_negatives_match_hand_computation():
    g = torch.Generator().manual_seed(0)
    sent = torch.randn(6, 4, generator=g)                  # reports: 2 sentences, 3 sentences, 1 sentence
    patches = torch.randn(3, 6, 4, generator=g)            # B = 3 volumes, N = 6, D = 4
    s2v = torch.tensor([0, 0, 1, 1, 1, 2])
    tau, k = 0.1, 2
    out = similarity_alignment_loss(sent, patches, s2v, k=k, temperature=tau, negatives="report")

    u = [_norm(s) for s in sent]
    z = torch.stack([torch.stack([_norm(p) for p in vol]) for vol in patches])
    a, chosen = _hand_pooled(u, z, s2v, k)
    report_losses = []
    for members in ([0, 1], [2, 3, 4]):                    # the one-sentence report 2 contributes nothing
        total = 0.0
        for i in members:
            row = [float(u[i] @ a[j]) / tau for j in members]            # sentence i vs pooled of its report
            col = [float(u[j] @ a[i]) / tau for j in members]            # pooled i vs sentences of its report
            total += _ce(row, members.index(i)) + _ce(col, members.index(i))
        report_losses.append(total / len(members))
    expected = sum(report_losses) / len(report_losses)
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    assert out["indices"].sort(1).values.tolist() == chosen
    assert out["n_terms"] == 5


def test_batch_negatives_match_hand_computation():
    g = torch.Generator().manual_seed(1)
    sent = torch.randn(5, 4, generator=g)
    patches = torch.randn(2, 6, 4, generator=g)
    s2v = torch.tensor([0, 0, 1, 1, 1])
    tau, k = 0.2, 2
    out = similarity_alignment_loss(sent, patches, s2v, k=k, temperature=tau, negatives="batch")

    u = [_norm(s) for s in sent]
    z = torch.stack([torch.stack([_norm(p) for p in vol]) for vol in patches])
    x = [[0.0] * 2 for _ in range(5)]                      # x[i][v] = u_i · a_i(v) / τ
    for v in range(2):
        pooled, _ = _hand_pooled(u, z, torch.full((5,), v), k)
        for i in range(5):
            x[i][v] = float(u[i] @ pooled[i]) / tau
    s_to_v = sum(_ce(x[i], int(s2v[i])) for i in range(5)) / 5
    v_to_s = 0.0
    for i in range(5):
        v = int(s2v[i])
        cands = [x[i][v]] + [x[j][v] for j in range(5) if int(s2v[j]) != v]
        v_to_s += _ce(cands, 0)
    expected = s_to_v + v_to_s / 5
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    assert out["logits"].shape == (5, 2) and out["indices"].shape == (5, k)


def test_same_text_pairs_are_not_batch_negatives():
    """Sentence 0 (volume 0) and sentence 3 (volume 1) say the same thing: volume 1 leaves sentence 0's
    denominator and sentence 3 leaves volume 0's candidates (and the other way round); in a batch of
    three volumes each keeps the third one as a negative."""
    g = torch.Generator().manual_seed(2)
    sent, patches = torch.randn(6, 4, generator=g), torch.randn(3, 6, 4, generator=g)
    s2v = torch.tensor([0, 0, 1, 1, 2, 2])
    twins = torch.zeros(6, 6, dtype=torch.bool)
    twins[0, 3] = twins[3, 0] = True
    twins[0, 1] = True                              # same report: not a twin, ignored
    out = similarity_alignment_loss(sent, patches, s2v, k=2, temperature=0.2, negatives="batch", same_text=twins)
    x = out["logits"].tolist()                      # x[i][v], unmasked
    excluded_volume = {0: 1, 3: 0}
    s_to_v = sum(_ce([x[i][v] for v in range(3) if v == s2v[i] or v != excluded_volume.get(i)],
                     [v for v in range(3) if v == s2v[i] or v != excluded_volume.get(i)].index(int(s2v[i])))
                 for i in range(6)) / 6
    v_to_s = 0.0
    for i in range(6):
        v = int(s2v[i])
        others = [j for j in range(6) if int(s2v[j]) != v and not (twins[i, j] or twins[j, i])]
        v_to_s += _ce([x[i][v]] + [x[j][v] for j in others], 0)
    assert float(out["loss"]) == pytest.approx(s_to_v + v_to_s / 6, rel=1e-5)
    plain = similarity_alignment_loss(sent, patches, s2v, k=2, temperature=0.2, negatives="batch")
    assert float(plain["loss"]) != pytest.approx(float(out["loss"]), rel=1e-3)
    assert torch.equal(plain["indices"], out["indices"])   # the picks do not depend on who is a negative


def test_single_sentence_reports_give_zero_attached_loss():
    sent = torch.randn(2, 4, requires_grad=True)
    out = similarity_alignment_loss(sent, torch.randn(2, 6, 4), torch.tensor([0, 1]), k=2)
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad and out["n_terms"] == 0
    one = similarity_alignment_loss(sent, torch.randn(1, 6, 4), torch.tensor([0, 0]), k=2, negatives="batch")
    assert one["loss"].item() == 0.0


@pytest.mark.parametrize("negatives", ["report", "batch"])
def test_gradients_reach_exactly_the_chosen_patches(negatives):
    g = torch.Generator().manual_seed(2)
    sent = torch.randn(5, 8, generator=g, requires_grad=True)
    patches = torch.randn(2, 10, 8, generator=g, requires_grad=True)
    s2v = torch.tensor([0, 0, 0, 1, 1])
    out = similarity_alignment_loss(sent, patches, s2v, k=3, negatives=negatives)
    out["loss"].backward()
    touched = patches.grad.abs().sum(-1) > 0                                   # (V, N)
    selected = torch.zeros(2, 10, dtype=torch.bool)
    if negatives == "report":
        for i, v in enumerate(s2v.tolist()):
            selected[v, out["indices"][i]] = True
    else:                                       # every (sentence, volume) pair selects its own top-K
        from simcrop_kernels import topk_similarity
        u = torch.nn.functional.normalize(sent.detach(), dim=-1)
        z = torch.nn.functional.normalize(patches.detach(), dim=-1)
        idx = topk_similarity(u, z, 3, mode="all").indices                     # (Ns, V, K)
        for v in range(2):
            selected[v, idx[:, v].reshape(-1)] = True
    assert torch.equal(touched, selected)
    assert sent.grad is not None and sent.grad.abs().sum() > 0


def test_sentence_features_are_token_means():
    feats = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    ts = torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, 1, 1, 2]])
    sent, s2s = sentence_features(feats, ts)
    assert sent.shape == (5, 3) and s2s.tolist() == [0, 0, 1, 1, 1]
    assert torch.allclose(sent[0], feats[0, 1:3].mean(0)) and torch.allclose(sent[3], feats[1, 2:4].mean(0))
    assert torch.allclose(sent[4], feats[1, 4])
    with pytest.raises(ValueError, match="contiguously"):
        sentence_features(feats, torch.tensor([[0, 2, -1, -1, -1], [0, 0, 0, 0, 0]]))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="negatives"):
        similarity_alignment_loss(torch.randn(2, 4), torch.randn(1, 6, 4), torch.tensor([0, 0]), 2, negatives="x")


def test_both_negatives_sum_the_two_forms():
    g = torch.Generator().manual_seed(4)
    sent, patches = torch.randn(5, 8, generator=g), torch.randn(2, 10, 8, generator=g)
    s2v = torch.tensor([0, 0, 0, 1, 1])
    both = similarity_alignment_loss(sent, patches, s2v, k=3, negatives="both")
    report = similarity_alignment_loss(sent, patches, s2v, k=3, negatives="report")
    batch = similarity_alignment_loss(sent, patches, s2v, k=3, negatives="batch")
    assert torch.allclose(both["loss"], report["loss"] + batch["loss"])
    assert torch.equal(both["indices"], report["indices"]) and torch.equal(both["indices"], batch["indices"])


def test_selection_features_choose_and_patches_pool():
    """select_patches decides the top-K; the pooled region is still the mean of the chosen `patches`."""
    g = torch.Generator().manual_seed(5)
    sent, patches = torch.randn(4, 8, generator=g), torch.randn(2, 10, 8, generator=g, requires_grad=True)
    s2v = torch.tensor([0, 0, 1, 1])
    same = similarity_alignment_loss(sent, patches, s2v, k=3,
                                     select_patches=torch.nn.functional.normalize(patches.detach(), dim=-1))
    plain = similarity_alignment_loss(sent, patches, s2v, k=3)
    assert torch.equal(same["indices"], plain["indices"]) and torch.allclose(same["loss"], plain["loss"])
    other = torch.randn(2, 10, 8, generator=g)
    out = similarity_alignment_loss(sent, patches, s2v, k=3, select_patches=other)
    from simcrop_kernels import topk_similarity
    u = torch.nn.functional.normalize(sent, dim=-1)
    expected = topk_similarity(u, other, 3, mode="own", sentence_to_volume=s2v).indices   # as given: magnitudes count
    assert torch.equal(out["indices"], expected)
    z = torch.nn.functional.normalize(patches.detach(), dim=-1)
    pooled = torch.nn.functional.normalize(z[s2v[:, None], expected].mean(1), dim=-1)
    assert torch.allclose(out["pooled"], pooled, atol=1e-6)
    out["loss"].backward()
    touched = patches.grad.abs().sum(-1) > 0
    chosen = torch.zeros(2, 10, dtype=torch.bool)
    for i, v in enumerate(s2v.tolist()):
        chosen[v, expected[i]] = True
    assert torch.equal(touched, chosen)
    for negatives in ("batch", "both"):                        # the other forms accept it too
        assert torch.isfinite(similarity_alignment_loss(sent, patches, s2v, k=3, negatives=negatives,
                                                        select_patches=other)["loss"])
