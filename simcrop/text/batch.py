"""Collate (image, report) samples into one pre-training batch: tokens, token → sentence map, MLM inputs.

The report text is `findings + " " + impressions` (just `findings` when there is no impression), so
character offsets of findings sentences (`simcrop.text.sentences`) are offsets into the text as well.

MLM masking: in every report, round(mask_prob × n_real) of its n_real real tokens (not [CLS]/[SEP]/pad;
at least one) are chosen uniformly without replacement; by default every chosen token becomes [MASK]
(at a mask ratio of 0.75 BERT's 80/10/10 mix leaves little context; `bert_mix=True` turns it on: 80 %
[MASK], 10 % a random token, 10 % unchanged).

Reproducibility: a sample that carries `mask_seed` (the pre-training dataset sets it from
(seed, epoch, index), like its augmentation) gets its mask from a generator seeded with that alone, so
the mask depends neither on the worker that collates it, nor on the batch it lands in, nor on where a
resumed run restarted (the batcher's own counter restarts with every process). Samples without one
share a fresh `torch.Generator` per call seeded with
    seed_b = mix(seed, torch.initial_seed(), counter)
where `counter` counts this batcher's calls and `torch.initial_seed()` is the process seed (the
DataLoader sets `base_seed + worker_id` in a worker): a rerun with the same seeds gets the same masks.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def batch_seed(seed: int, initial_seed: int, counter: int) -> int:
    """Deterministic 63-bit mix of the three integers (a splitmix64-style hash)."""
    x = 0
    for value, mult in zip((seed, initial_seed, counter), _MIX):
        x = ((x ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * mult) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def report_text(findings: str, impressions: str) -> str:
    """The text the model reads; findings first, so findings offsets stay valid."""
    return findings + " " + impressions if impressions and impressions.strip() else findings


class ReportBatcher:
    """`collate_fn` for pre-training.

    Input: a list of samples `{"image": (1, X, Y, Z) float, "volume_id": str, "findings": str,
    "impressions": str, "sentences": [{"section", "text", "start", "end", "lesion_ids"}]}` (offsets
    within findings; records of other sections are ignored).

    Output (B samples, L = longest tokenized report in the batch, ≤ max_tokens):
        image            (B, 1, X, Y, Z) float32
        volume_id        list[str]
        input_ids        (B, L) int64, [CLS] text [SEP] [PAD]...
        attention_mask   (B, L) int64, 1 = real token (specials included)
        token_sentence   (B, L) int64, index of the findings sentence holding each token within its
                         report (0..n_b - 1, contiguous); -1 for specials, padding, impression tokens
                         and findings text outside every sentence
        findings_mask    (B, L) bool, real non-special tokens that start inside the findings text
        mlm_input_ids    (B, L) int64, input_ids with the chosen tokens masked
        mlm_labels       (B, L) int64, original id at chosen positions, -100 elsewhere
        mlm_all_labels   (B, L) int64, input_ids everywhere (loss on all positions, padding included)
        sentence_lesions list (per sample) of lists (per kept sentence) of lesion ids
        lesion_map, organ_map (B, X, Y, Z) int16, only when every sample carries them (pretrain.diagnostics)
        labels           (B, n_labels) float32 multi-hot, only when the samples carry `labels` (the
                         supervised objective; `PretrainDataset(labels=True)`); some but not all: ValueError
        truncated_reports int, reports cut at max_tokens (the first one per batcher is logged as a warning)
        dropped_sentences int, sentences whose tokens were all truncated away
    """

    def __init__(self, tokenizer, max_tokens: int = 256, mask_prob: float = 0.75, seed: int = 0,
                 bert_mix: bool = False):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("ReportBatcher needs a fast tokenizer (character offsets)")
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"text_mask_prob must be in (0, 1]; got {mask_prob}")
        limit = int(getattr(tokenizer, "model_max_length", max_tokens) or max_tokens)
        if max_tokens > limit:
            log.warning("text_max_tokens %d exceeds the tokenizer limit %d; using %d", max_tokens, limit, limit)
            max_tokens = limit
        if max_tokens < 3:
            raise ValueError(f"text_max_tokens must be >= 3 ([CLS], one token, [SEP]); got {max_tokens}")
        self.tokenizer, self.max_tokens, self.mask_prob = tokenizer, int(max_tokens), float(mask_prob)
        self.seed, self.bert_mix, self.counter, self._warned = int(seed), bool(bert_mix), 0, False
        self.mask_id, self.pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
        self.special_ids = [i for i in tokenizer.all_special_ids if i is not None]

    def next_generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(batch_seed(self.seed, torch.initial_seed(), self.counter))
        self.counter += 1
        return gen

    def __call__(self, samples: list[dict]) -> dict:
        if not samples:
            raise ValueError("ReportBatcher got an empty list of samples")
        sentences = []
        for s in samples:
            own = [r for r in s["sentences"] if r.get("section", "findings") == "findings"]
            if not own or not s["findings"].strip():
                raise ValueError(f"volume {s['volume_id']!r}: no Findings sentences; the dataset should have "
                                 "filtered it (see the sentences stage's quarantine)")
            sentences.append(own)
        texts = [report_text(s["findings"], s.get("impressions", "")) for s in samples]
        enc = self.tokenizer(texts, max_length=self.max_tokens, truncation=True, padding="longest",
                             return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
        input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        real = (attention_mask.bool() & ~enc["special_tokens_mask"].bool())        # (B, L)
        offsets = enc["offset_mapping"]                                             # (B, L, 2)
        token_sentence = torch.full_like(input_ids, -1)
        findings_mask = torch.zeros_like(real)
        lesions, dropped, truncated = [], 0, []
        for b, (sample, recs, text) in enumerate(zip(samples, sentences, texts)):
            if _is_truncated(text, offsets[b], real[b]):
                truncated.append(sample["volume_id"])
            findings_mask[b] = real[b] & (offsets[b, :, 0] < len(sample["findings"]))
            ts, kept = _map_tokens(offsets[b], real[b], recs)
            dropped += len(recs) - len(kept)
            if not kept:
                raise ValueError(f"volume {sample['volume_id']!r}: no Findings sentence has a token within "
                                 f"text_max_tokens={self.max_tokens}")
            token_sentence[b] = ts
            lesions.append([list(recs[i].get("lesion_ids") or []) for i in kept])
        if truncated:
            self._note(f"{len(truncated)} report(s) truncated at text_max_tokens={self.max_tokens} "
                       f"(first: {truncated[0]!r}); {dropped} sentence(s) lost every token and were dropped")
        if all("mask_seed" in s for s in samples):
            generators = [torch.Generator().manual_seed(int(s["mask_seed"])) for s in samples]
        else:
            generators = [self.next_generator()] * len(samples)     # one stream, drawn row by row
        mlm_input_ids, mlm_labels = self.mask_tokens(input_ids, real, generators)
        maps = {key: torch.stack([s[key] for s in samples]) for key in ("lesion_map", "organ_map")
                if all(key in s for s in samples)}                 # training diagnostics, when loaded
        carrying = [s for s in samples if "labels" in s]
        if carrying:                                                   # the supervised objective's targets
            if len(carrying) != len(samples):
                raise ValueError(f"{len(carrying)} of {len(samples)} samples carry labels; all or none must")
            maps["labels"] = torch.stack([torch.as_tensor(s["labels"], dtype=torch.float32) for s in samples])
        return dict(
            **maps,
            image=torch.stack([torch.as_tensor(s["image"], dtype=torch.float32) for s in samples]),
            volume_id=[s["volume_id"] for s in samples], input_ids=input_ids, attention_mask=attention_mask,
            token_sentence=token_sentence, findings_mask=findings_mask, mlm_input_ids=mlm_input_ids,
            mlm_labels=mlm_labels, mlm_all_labels=input_ids.clone(), sentence_lesions=lesions,
            truncated_reports=len(truncated), dropped_sentences=dropped,
        )

    def _note(self, message: str) -> None:
        """The first truncation is a warning; later ones (counted in each batch) go to DEBUG, not to spam."""
        log.log(logging.DEBUG if self._warned else logging.WARNING, message + (
            "" if self._warned else "; later truncations: DEBUG log and batch['truncated_reports']"))
        self._warned = True

    def mask_tokens(self, input_ids: torch.Tensor, real: torch.Tensor,
                    generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids (B, L) int64, real (B, L) bool, one generator per row → (mlm_input_ids (B, L),
        mlm_labels (B, L), -100 = not chosen).

        Each row draws only over its own real tokens, so its mask does not depend on the padding
        length (the longest report of whatever batch it is in).
        """
        masked, labels = input_ids.clone(), torch.full_like(input_ids, -100)
        for b, generator in enumerate(generators):
            positions = real[b].nonzero().squeeze(1)
            n_real = len(positions)
            if n_real == 0:
                continue
            n_mask = min(max(1, round(n_real * self.mask_prob)), n_real)
            chosen = positions[torch.rand(n_real, generator=generator).argsort()[:n_mask]]
            labels[b, chosen] = input_ids[b, chosen]
            if self.bert_mix:             # 80 % [MASK], 10 % a random token, 10 % unchanged
                u = torch.rand(n_mask, generator=generator)
                random_ids = torch.randint(len(self.tokenizer), (n_mask,), generator=generator)
                masked[b, chosen] = torch.where(u < 0.8, torch.full_like(random_ids, self.mask_id),
                                                torch.where(u < 0.9, random_ids, input_ids[b, chosen]))
            else:
                masked[b, chosen] = self.mask_id
        return masked, labels


def _is_truncated(text: str, offsets: torch.Tensor, real: torch.Tensor) -> bool:
    """True when characters beyond the last kept token's end are more than whitespace."""
    last_end = int(offsets[real, 1].max()) if bool(real.any()) else 0
    return bool(text[last_end:].strip())


def _map_tokens(offsets: torch.Tensor, real: torch.Tensor, records: list[dict]) -> tuple[torch.Tensor, list[int]]:
    """Token → sentence for one report.

    offsets (L, 2) int64 character spans; real (L,) bool; records: findings sentences with start/end.
    A token belongs to the sentence whose [start, end) holds its first character. Returns token_sentence
    (L,) int64 with kept sentences renumbered 0..n-1, and the indices (into records) of the kept sentences.
    """
    starts = torch.tensor([int(r["start"]) for r in records])
    ends = torch.tensor([int(r["end"]) for r in records])
    tok_start = offsets[:, 0]
    inside = (tok_start[:, None] >= starts[None]) & (tok_start[:, None] < ends[None]) & real[:, None]  # (L, S)
    has = inside.any(1)
    which = inside.float().argmax(1)
    kept = sorted(set(which[has].tolist()))
    renumber = torch.full((len(records),), -1, dtype=torch.long)
    renumber[kept] = torch.arange(len(kept))
    return torch.where(has, renumber[which], torch.full_like(which, -1)), kept
