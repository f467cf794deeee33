"""Training throughput: SimCroP vs the MAE-only objective, same model size, same batches, same process.

    python benchmarks/train.py                      # demo config + a few ViT-B steps at full size (CPU)
    python benchmarks/train.py --device cuda        # on a GPU: bf16 autocast, ViT-B at 224 x 224 x 112
Batches are built once (random images in [-1, 1], a realistic ~19-sentence report) so the figures measure
the model step; loader wait is measured by the trainer and logged as train/data_wait_share.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time

import torch

from simcrop import config as config_mod
from simcrop.model.factory import build_collate, build_pretrain_model
from simcrop.text.sentences import build_splitter, split_report

REPORT = (
    "Trachea and both main bronchi are open. Mediastinal structures cannot be evaluated optimally. "
    "Heart size is normal. No pericardial effusion was detected. Thoracic aorta diameter is normal. "
    "No lymph node was detected in mediastinal and hilar pathological size. "
    "A 9 mm nodule is seen in the right upper lobe, approx. 3.5 cm from the pleura. "
    "Ground-glass densities are observed in the left lower lobe. No pleural effusion. "
    "Mild emphysematous changes are present in both upper lobes. No consolidation was observed. "
    "Atelectatic bands are seen at the lung bases. The upper abdominal organs are unremarkable. "
    "No lytic or destructive lesion was detected in the bones within the examination area. "
    "Degenerative changes are seen in the thoracic vertebrae.")

SIZES = {
    "demo": {},  # config/config.yaml as it is
    "vit_base": {"model": {"vit": "vit_base", "img_size": [224, 224, 112], "decoder_dim": 768, "decoder_depth": 4,
                           "decoder_heads": 16, "text_max_tokens": 512, "topk": 32, "text_decoder_layers": 6}},
}


def make_samples(cfg, n: int) -> list[dict]:
    splitter = build_splitter(cfg.sentences)
    sentences = [dict(s, section="findings", lesion_ids=[]) for s in split_report(REPORT, splitter)]
    generator = torch.Generator().manual_seed(0)
    return [{"volume_id": f"bench_{i}", "image": torch.rand((1, *cfg.model.img_size), generator=generator) * 2 - 1,
             "findings": REPORT, "impressions": "Nodule in the right upper lobe.", "sentences": sentences}
            for i in range(n)]


def time_objective(cfg, objective: str, batch: dict, steps: int, device: torch.device) -> float:
    cfg = copy.deepcopy(cfg)
    cfg.model.objective = objective
    torch.manual_seed(0)
    model = build_pretrain_model(cfg.model).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    times = []
    for step in range(steps + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        with autocast:
            out = model(batch)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    return len(batch["volume_id"]) / (sum(times) / len(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="demo,vit_base", help=f"comma list of {list(SIZES)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 demo, 2 vit_base on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: config (demo), 1 (vit_base CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput on {name} (fp32 on CPU, bf16 autocast on CUDA)")
    print(f"{'size':9} {'batch':>5} {'simcrop samples/s':>18} {'mae samples/s':>14} {'simcrop / mae':>14}")
    for size in args.sizes.split(","):
        cfg = config_mod.load(["config/config.yaml"], [json.dumps(SIZES[size])])
        full_on_cpu = size == "vit_base" and device.type == "cpu"
        batch_size = args.batch_size or (1 if full_on_cpu else cfg.pretrain.batch_size)
        steps = args.steps or (2 if full_on_cpu else 5)
        batch = build_collate(cfg.model)(make_samples(cfg, batch_size))
        simcrop = time_objective(cfg, "simcrop", batch, steps, device)
        mae = time_objective(cfg, "mae", batch, steps, device)
        print(f"{size:9} {batch_size:5d} {simcrop:18.3f} {mae:14.3f} {simcrop / mae:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
