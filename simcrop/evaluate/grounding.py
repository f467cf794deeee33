"""Grounding on the synthetic corpus: do a sentence's top-K patches lie on the lesion it describes?

For each Findings sentence that names planted lesions (`lesion_ids`), with L its lesion patches (the
patches of the centre-crop grid holding at least one voxel of those lesions, the mask cropped exactly
like the image) and T its top-K patches in its own volume (`topk_similarity`, mode "own"):

    hit fraction  = |T ∩ L| / K          chance = |L| / N  (the expected value for K random patches)
    pointing game = [best patch ∈ L]     chance = |L| / N
    oracle        = min(|L|, K) / K      (the best any model can do when the lesion covers < K patches)

Means over sentences, and the ratio of each mean to its chance mean, go to the metrics file; heat maps
of a few sentences go beside it. Real data (no lesion masks) gets the figures and no scores.

Controls on the same sentences and K (`simcrop.evaluate.controls`): `location_prior` (the top-K patches of
the region the sentence's words name, from the anatomy map alone) and `content_shuffled` (the model's top-K
over the features of another patient's volume: positions kept, contents swapped). Every number carries a
95 % patient-level bootstrap interval (`intervals`, `simcrop.evaluate.bootstrap`), `differences` holds the
paired model − prior and model − shuffled, and `per_sentence` the per-sentence scores (patient id, chance,
hit and pointing of each method) for bootstraps across objectives.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from simcrop_kernels import topk_similarity
from simcrop.data.manifest import read_manifest
from simcrop.data.preprocessed_io import DEFAULT_HU_WINDOW, open_preprocessed
from simcrop.evaluate.bootstrap import LEVEL, N_BOOT, ClusterBootstrap
from simcrop.evaluate.cases import add_features, lesion_mask_path, load_context, report_items
from simcrop.evaluate.embed import (NotApplicableError, encode_reports, encode_sentences, encode_volumes, load_crop,
                                    load_mask_crop, selection_features)
from simcrop.evaluate.controls import content_shuffled_topk, donor_volumes, location_prior
from simcrop.evaluate.heatmap import heatmap_figure
from simcrop.evaluate.metrics import json_safe
from simcrop.io import write_json_atomic
from simcrop.layout import DataDir, figures_beside

log = logging.getLogger(__name__)


def lesion_patches(mask: torch.Tensor, lesion_ids: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """mask (X, Y, Z) int label map on the crop → (N,) bool, patches (h-major, d-minor, the ViT's token
    order) holding at least one voxel of any of `lesion_ids`."""
    (X, Y, Z), (ph, pw, pd) = mask.shape, patch_size
    if X % ph or Y % pw or Z % pd:
        raise ValueError(f"mask shape {tuple(mask.shape)} is not a multiple of the patch size {tuple(patch_size)}")
    hit = torch.isin(mask, torch.as_tensor(list(lesion_ids), dtype=mask.dtype))
    return hit.reshape(X // ph, ph, Y // pw, pw, Z // pd, pd).any(dim=5).any(dim=3).any(dim=1).reshape(-1)


def grounding_scores(indices: torch.Tensor, lesion: torch.Tensor) -> dict[str, torch.Tensor]:
    """indices (Ns, K) int64 top-K patch indices, best first; lesion (Ns, N) bool lesion patches of each
    sentence's volume → per-sentence float64 tensors (Ns,): hit, pointing, chance, oracle, lesion_patches."""
    if indices.shape[0] != lesion.shape[0]:
        raise ValueError(f"indices {tuple(indices.shape)} and lesion {tuple(lesion.shape)} disagree on Ns")
    k, n = indices.shape[1], lesion.shape[1]
    on = torch.gather(lesion, 1, indices.long()).double()                                # (Ns, K)
    size = lesion.sum(1).double()
    return {"hit": on.mean(1), "pointing": on[:, 0], "chance": size / n,
            "oracle": torch.clamp(size, max=k) / k, "lesion_patches": size}


def summarize(per: dict[str, torch.Tensor]) -> dict:
    """Means over sentences and ratios to chance (NaN when there is no sentence)."""
    n = int(per["hit"].numel())

    def mean(key):
        return float(per[key].mean()) if n else float("nan")

    hit, pointing, chance = mean("hit"), mean("pointing"), mean("chance")
    return {"n_sentences": n, "hit_fraction": hit, "hit_fraction_chance": chance,
            "hit_fraction_oracle": mean("oracle"), "hit_ratio_to_chance": hit / chance if n else float("nan"),
            "pointing_game": pointing, "pointing_chance": chance,
            "pointing_ratio_to_chance": pointing / chance if n else float("nan"),
            "lesion_patches_mean": mean("lesion_patches")}


CONTROLS = ("location_prior", "content_shuffled")
INTERVAL_KEYS = ("hit_fraction", "hit_fraction_chance", "hit_fraction_oracle", "hit_ratio_to_chance",
                 "pointing_game", "pointing_chance", "pointing_ratio_to_chance")
DIFFERENCE_KEYS = ("hit_fraction", "pointing_game", "hit_ratio_to_chance")


def _method_intervals(boot: ClusterBootstrap, hit, pointing, chance, oracle=None) -> dict:
    out = {"hit_fraction": boot.mean(hit), "hit_fraction_chance": boot.mean(chance),
           "hit_ratio_to_chance": boot.ratio(hit, chance), "pointing_game": boot.mean(pointing),
           "pointing_chance": boot.mean(chance), "pointing_ratio_to_chance": boot.ratio(pointing, chance)}
    if oracle is not None:
        out["hit_fraction_oracle"] = boot.mean(oracle)
    return out


def bootstrap_grounding(per: dict, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """Patient-level bootstrap of a grounding `per_sentence` record (as evaluate_grounding writes it):
    {"intervals": model key → {value, lo, hi}, "<control>": {key → interval} (None when the control is
    missing), "differences": {"model_minus_<control>": {key → paired interval}}, "bootstrap": settings}."""
    boot = ClusterBootstrap(per["patient_id"], n_boot, seed, level)
    chance = np.asarray(per["chance"], dtype=np.float64)
    model = {key: np.asarray(v, dtype=np.float64) for key, v in per["model"].items()}
    out = {"intervals": _method_intervals(boot, model["hit"], model["pointing"], chance, per.get("oracle")),
           "differences": {}}
    for name in CONTROLS:
        control = per.get(name)
        if control is None:
            out[name] = None
            continue
        ctl = {key: np.asarray(v, dtype=np.float64) for key, v in control.items()}
        out[name] = _method_intervals(boot, ctl["hit"], ctl["pointing"], chance)
        out["differences"][f"model_minus_{name}"] = {
            "hit_fraction": boot.diff(model["hit"], ctl["hit"]),
            "pointing_game": boot.diff(model["pointing"], ctl["pointing"]),
            "hit_ratio_to_chance": boot.ratio_diff(model["hit"], ctl["hit"], chance)}
    out["bootstrap"] = {"unit": "patient", "n_boot": boot.n_boot, "level": boot.level, "seed": seed,
                        "n_patients": boot.n_groups, "n_sentences": boot.n_items, "method": "percentile"}
    return out


def _control_summary(per: dict[str, torch.Tensor]) -> dict:
    summary = summarize(per)
    return {key: summary[key] for key in ("hit_fraction", "hit_ratio_to_chance", "pointing_game",
                                          "pointing_ratio_to_chance")}


def organ_map_path(run_dir, volume_id: str) -> Path:
    """The anatomy label map beside the lesion mask (synthetic corpus; simcrop.evaluate.controls)."""
    return DataDir(run_dir).preprocessed.mask(volume_id, "organ")


def _patient_ids(run_dir, items: list[dict]) -> dict[str, str]:
    """volume_id → patient_id from the manifest (scan_id where the manifest has none)."""
    try:
        manifest = read_manifest(DataDir(run_dir).manifest)
        known = dict(zip(manifest["volume_id"].astype(str), manifest["patient_id"].astype(str)))
    except Exception as err:                                  # noqa: BLE001 - a missing column is not fatal
        log.warning("no patient ids in the manifest (%s): bootstrapping over scans", err)
        known = {}
    return {it["volume_id"]: known.get(it["volume_id"]) or it["scan_id"] for it in items}


def _controls(ctx, run_dir, enc, rows, lesion, s_idx, s2v, device, seed, patient_ids,
              select) -> tuple[dict, dict, dict]:
    """Scores of the location prior and the content-shuffled model on the grounding sentences:
    ({control: per-sentence scores or None}, {control: summary}, {control: info})."""
    encoder, n = ctx.model.encoder, ctx.patches.shape[1]
    organ_maps, maps = {}, []
    for row in rows:
        r = row["volume"]
        if r not in organ_maps:
            item = ctx.items[r]
            path = organ_map_path(run_dir, item["volume_id"])
            organ_maps[r] = (load_mask_crop(path, encoder.img_size, open_preprocessed(item["path"]).shape).numpy()
                             if path.exists() else None)
        maps.append(organ_maps[r])
    prior = location_prior([row["text"] for row in rows], maps, encoder.patch_size, n, ctx.k, seed=seed)
    per = {"location_prior": dict(grounding_scores(prior.indices, lesion), indices=prior.indices)}
    organs = np.array([loc.organ or "none" for loc in prior.locations])
    hit = per["location_prior"]["hit"].numpy()
    info = {"location_prior": {"fallbacks": prior.fallbacks, "seed": seed,
                               "anatomy_maps": sum(m is not None for m in organ_maps.values()),
                               "by_organ": {o: {"n_sentences": int((organs == o).sum()),
                                                "hit_fraction": float(hit[organs == o].mean())}
                                            for o in sorted(set(organs.tolist()))}}}
    patients = [patient_ids[it["volume_id"]] for it in ctx.items]
    try:
        donors = donor_volumes(patients, seed=seed)
    except ValueError as err:
        per["content_shuffled"] = None
        info["content_shuffled"] = {"applicable": False, "reason": str(err)}
    else:
        shuffled = content_shuffled_topk(enc["features"][s_idx], select, ctx.k, s2v, donors, device)
        per["content_shuffled"] = grounding_scores(shuffled, lesion)
        info["content_shuffled"] = {"applicable": True, "seed": seed,
                                    "donor": {ctx.items[v]["volume_id"]: ctx.items[int(d)]["volume_id"]
                                              for v, d in enumerate(donors)}}
    summary = {name: (_control_summary(p) if p is not None else None) for name, p in per.items()}
    return per, summary, info


def _grounding_sentences(ctx, run_dir, enc: dict) -> tuple[list[dict], torch.Tensor, dict]:
    """The encoded sentences that name lesions, with their lesion patches (N,) bool each."""
    named = sum(1 for it in ctx.items for rec in it["sentences"] if rec.get("lesion_ids"))
    encoder, skipped = ctx.model.encoder, {"no_mask_file": 0, "lesion_outside_crop": 0, "truncated": 0}
    masks, rows, lesions = {}, [], []
    for s, (r, j) in enumerate(zip(enc["sentence_to_report"].tolist(), enc["sentence_index"].tolist())):
        item = ctx.items[r]
        ids = item["sentences"][j].get("lesion_ids") or []
        if not ids:
            continue
        if r not in masks:
            path = lesion_mask_path(run_dir, item["volume_id"])
            shape = open_preprocessed(item["path"]).shape            # header only: same grid as the image?
            masks[r] = load_mask_crop(path, encoder.img_size, shape) if path.exists() else None
        if masks[r] is None:
            skipped["no_mask_file"] += 1
            continue
        patches = lesion_patches(masks[r], ids, encoder.patch_size)
        if not bool(patches.any()):
            skipped["lesion_outside_crop"] += 1
            continue
        rows.append({"sentence": s, "volume": r, "lesion_ids": list(ids), "text": item["sentences"][j]["text"]})
        lesions.append(patches)
    lesion = torch.stack(lesions) if lesions else torch.zeros(0, ctx.patches.shape[1], dtype=torch.bool)
    skipped["truncated"] = named - len(rows) - skipped["no_mask_file"] - skipped["lesion_outside_crop"]
    return rows, lesion, skipped


def _prior_figure(ctx, run_dir, enc, rows, model_top, model_per, prior_per, figures_dir) -> dict | None:
    """The model's K picks beside the location prior's for one correctly grounded sentence
    (`simcrop.evaluate.prior_figure`); None when the model's best patch is on no sentence's lesion."""
    from simcrop.evaluate.prior_figure import comparison_figure, pick_sentence

    i = pick_sentence(model_per["hit"], model_per["pointing"], prior_per["hit"], model_per["chance"])
    if i is None:
        return None
    row, item, encoder = rows[i], ctx.items[rows[i]["volume"]], ctx.model.encoder
    volume = load_crop(item["path"], encoder.img_size, ctx.model_cfg.pretrain.pad_mode,
                       ctx.model_cfg.preprocess.hu_window)[0].numpy()
    mask = load_mask_crop(lesion_mask_path(run_dir, item["volume_id"]), encoder.img_size)
    lesion = torch.isin(mask, torch.as_tensor(row["lesion_ids"])).numpy()
    select = selection_features(ctx.model, ctx.patches[row["volume"]])
    sims = (select.float() @ enc["features"][row["sentence"]].float()).reshape(encoder.grid_size)
    png = comparison_figure(volume, lesion, sims.numpy(), model_top[i].numpy(), prior_per["indices"][i].numpy(),
                            row["text"], Path(figures_dir) / "vs_location_prior.png", item["volume_id"])
    return {"path": str(png), "volume_id": item["volume_id"], "sentence": row["text"],
            "model_hit": float(model_per["hit"][i]), "location_prior_hit": float(prior_per["hit"][i])}


def heatmap_for(model, patches: torch.Tensor, sentence: torch.Tensor, volume_path, text: str, out_png,
                mask_path=None, lesion_ids: Sequence[int] | None = None, k: int = 8, title: str = "",
                pad_mode: str = "reflect", hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> Path:
    """One figure: sentence (D,) against one volume's patches (N, D), over its centre crop."""
    encoder = model.encoder
    sims = patches.float() @ sentence.float()                                          # (N,)
    volume = load_crop(volume_path, encoder.img_size, pad_mode, hu_window)[0].numpy()
    lesion = None
    if mask_path is not None and Path(mask_path).exists():
        mask = load_mask_crop(mask_path, encoder.img_size)
        lesion = (torch.isin(mask, torch.as_tensor(list(lesion_ids))) if lesion_ids else mask > 0).numpy()
    top = torch.topk(sims, min(k, sims.numel())).indices.numpy()
    return heatmap_figure(volume, text, sims.reshape(encoder.grid_size).numpy(), out_png, lesion, title,
                          top_patches=top)


def heatmap_for_text(model, volume_path, text: str, out_png, mask_path=None, lesion_ids=None, k: int = 8,
                     pad_mode: str = "reflect", max_tokens: int = 256,
                     hu_window: Sequence[float] = DEFAULT_HU_WINDOW) -> Path:
    """Heat map of any sentence over any preprocessed volume (real or synthetic); the sentence is read on
    its own, not in the context of a report. Centre crop only; for a raw NIfTI/DICOM input, the whole
    volume (tiled) and a NIfTI heat map on the input's grid see `simcrop.evaluate.volume_heatmap`
    (`simcrop heatmap`)."""
    patches = encode_volumes(model, [volume_path], pad_mode=pad_mode, progress=False, hu_window=hu_window)[0]
    if patches.shape[0] == 1:
        raise NotApplicableError("a global-feature model (CLIP baseline) has no per-patch similarity to draw")
    sentence = encode_sentences(model, [text], max_tokens=max_tokens)[0]
    return heatmap_for(model, patches, sentence, volume_path, text, out_png, mask_path, lesion_ids, k,
                       Path(volume_path).name.split(".")[0], pad_mode, hu_window)


def evaluate_grounding(cfg, checkpoint, run_dir, out_json, *, split: str = "test", topk: int | None = None,
                       n_figures: int = 4, figures_dir=None, text_max_tokens: int | None = None,
                       batch_size: int = 2, cache_dir=None, device: str = "cpu", progress: bool = True,
                       text_encoder=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Hit fraction and pointing game of lesion sentences vs chance over `split`; writes `out_json` and
    up to `n_figures` heat maps (one per scan) to figures_dir (default: `<out_json stem>_figures/`).

    text_max_tokens: report tokens read (default: the checkpoint's, as in training); lesion sentences cut
    off by it are counted in `skipped_sentences.truncated`.

    n_boot, seed: patient-level bootstrap resamples and the seed of the bootstrap, the location prior's
    tie-breaking and the content shuffle.

    Raises NotApplicableError for models without patch features (MAE, CLIP baseline).
    """
    ctx = load_context(checkpoint, device, text_encoder)
    if ctx.kind != "patch":
        raise NotApplicableError(f"objective {ctx.model_cfg.model.objective!r} has no patch-sentence "
                                 "similarity: grounding needs SimCroP's patch features")
    items = report_items(run_dir, split, ctx.model_cfg.model.img_size)
    # synthetic lesions: only volumes that have a lesion sentence and a mask need features
    named = [it for it in items if any(s.get("lesion_ids") for s in it["sentences"])
             and lesion_mask_path(run_dir, it["volume_id"]).exists()]
    real = not named
    if real:                                   # heat maps only: the first volume of the first scans
        per_scan = {}
        for it in items:
            per_scan.setdefault(it["scan_id"], it)
        named = list(per_scan.values())[:max(n_figures, 1)]
    add_features(ctx, checkpoint, run_dir, named, topk, cache_dir, batch_size, progress)
    enc = encode_reports(ctx.model, ctx.items, max_tokens=text_max_tokens or ctx.model_cfg.model.text_max_tokens,
                         progress=progress)
    rows, lesion, skipped = _grounding_sentences(ctx, run_dir, enc)
    if not real:                               # lesion sentences of volumes left out for want of a mask
        kept = {it["volume_id"] for it in named}
        skipped["no_mask_file"] += sum(1 for it in items if it["volume_id"] not in kept
                                       for rec in it["sentences"] if rec.get("lesion_ids"))
    patient_ids = _patient_ids(run_dir, ctx.items)
    extra = {}
    if rows:
        s_idx = torch.tensor([row["sentence"] for row in rows])
        s2v = torch.tensor([row["volume"] for row in rows])
        # the choice is made as in training (position-centred models: on features minus the position means)
        select = selection_features(ctx.model, ctx.patches)
        res = topk_similarity(enc["features"][s_idx].to(device), select.to(device), ctx.k, mode="own",
                              sentence_to_volume=s2v.to(device), return_pooled=False)
        model_per = grounding_scores(res.indices.cpu(), lesion)
        summary = summarize(model_per)
        control_per, control_summary, control_info = _controls(ctx, run_dir, enc, rows, lesion, s_idx, s2v,
                                                               device, seed, patient_ids, select)
        per_sentence = {
            "patient_id": [patient_ids[ctx.items[row["volume"]]["volume_id"]] for row in rows],
            "volume_id": [ctx.items[row["volume"]]["volume_id"] for row in rows],
            "chance": model_per["chance"].tolist(), "oracle": model_per["oracle"].tolist(),
            "model": {"hit": model_per["hit"].tolist(), "pointing": model_per["pointing"].tolist()},
            **{name: (None if p is None else {"hit": p["hit"].tolist(), "pointing": p["pointing"].tolist()})
               for name, p in control_per.items()}}
        boot = bootstrap_grounding(per_sentence, n_boot, seed)
        for name in CONTROLS:
            scores = {} if control_summary[name] is None else {**control_summary[name], "intervals": boot[name]}
            extra[name] = {**scores, **control_info[name]}
        extra.update(intervals=boot["intervals"], differences=boot["differences"], bootstrap=boot["bootstrap"],
                     per_sentence=per_sentence)
    else:
        summary = summarize({key: torch.zeros(0) for key in ("hit", "pointing", "chance", "oracle",
                                                             "lesion_patches")})
    out_json = Path(out_json)
    figures_dir = Path(figures_dir) if figures_dir else figures_beside(out_json)
    figures = _figures(ctx, run_dir, enc, rows, n_figures, figures_dir)
    if rows:
        extra["figure_vs_prior"] = _prior_figure(ctx, run_dir, enc, rows, res.indices.cpu(), model_per,
                                                 control_per["location_prior"], figures_dir)
    metrics = {"task": "grounding", "applicable": not real, "split": split, **ctx.info, **summary,
               "skipped_sentences": skipped, "figures": [str(p) for p in figures], **extra}
    if real:
        metrics["reason"] = "no Findings sentence names a lesion with a mask (real data): heat maps only"
    write_json_atomic(Path(out_json), json_safe(metrics))
    log.info("grounding %s: %d sentences, hit fraction %.3f (chance %.3f), pointing %.3f (chance %.3f)", split,
             summary["n_sentences"], summary["hit_fraction"], summary["hit_fraction_chance"],
             summary["pointing_game"], summary["pointing_chance"])
    if extra:
        prior, shuffled = extra["location_prior"], extra["content_shuffled"]
        log.info("controls: location prior hit %.3f, pointing %.3f; content-shuffled hit %s", prior["hit_fraction"],
                 prior["pointing_game"], f"{shuffled['hit_fraction']:.3f}" if "hit_fraction" in shuffled else "n/a")
    return metrics


def _figures(ctx, run_dir, enc, rows, n_figures: int, out_dir: Path) -> list[Path]:
    """Heat maps of the first lesion sentences, one per scan; without any, the first Findings sentence
    of the first volumes."""
    if not rows:
        first = {}
        for s, r in enumerate(enc["sentence_to_report"].tolist()):
            first.setdefault(r, {"sentence": s, "volume": r, "lesion_ids": None,
                                 "text": ctx.items[r]["sentences"][int(enc["sentence_index"][s])]["text"]})
        rows = list(first.values())
    chosen, scans = [], set()
    for row in rows:
        scan = ctx.items[row["volume"]]["scan_id"]
        if scan not in scans and len(chosen) < n_figures:
            scans.add(scan)
            chosen.append(row)
    out = []
    for row in chosen:
        item = ctx.items[row["volume"]]
        png = out_dir / f"{item['volume_id']}_s{int(enc['sentence_index'][row['sentence']])}.png"
        out.append(heatmap_for(ctx.model, selection_features(ctx.model, ctx.patches[row["volume"]]),
                               enc["features"][row["sentence"]],
                               item["path"], row["text"], png, lesion_mask_path(run_dir, item["volume_id"]),
                               row["lesion_ids"], ctx.k, item["volume_id"], ctx.model_cfg.pretrain.pad_mode,
                               ctx.model_cfg.preprocess.hu_window))
    return out
