"""Training throughput: SimCroP vs the MAE-only objective, same model size, same batches, same process.

    python benchmarks/train.py                      # demo config + a few ViT-B steps at full size (CPU)
    python benchmarks/train.py --device cuda        # on a GPU: bf16 autocast, ViT-B at 224 x 224 x 112
    python benchmarks/train.py --device cuda --sizes vit_base --objectives simcrop --batch-size 16 --json out.json
Batches are built once (random images in [-1, 1], a realistic ~19-sentence report) so the figures measure
the model step; loader wait is measured by the trainer and logged as train/data_wait_share.

Per (size, objective): samples/s and ms per step (forward, backward, AdamW step; mean over the timed steps
after one warm-up step), peak memory of the step (CUDA: max_memory_allocated above what the model and batch
hold before it; CPU: peak resident memory, Linux only), and FLOPs of one step counted by
torch.utils.flop_counter on an extra, untimed step (forward + backward as executed: the frozen text
encoder's forward included). On CUDA, model FLOP utilisation (MFU) = counted FLOPs x steps/s over the dense
bf16 peak of the GPU (nominal for known GPUs, else a measured cuBLAS bf16 GEMM). Attention runs through
F.scaled_dot_product_attention; the `sdpa` field names the fused kernels the step dispatched to (flash,
efficient, cudnn), or "math or uncounted" when none ran (the math path is counted as its matmuls; the CPU
kernel has no FLOP formula, so CPU FLOPs leave attention out).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from pathlib import Path

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
    # a few seconds on a CPU (benchmarks/gpu_check.sh --cpu-smoke): the real SimCroP model, tiny widths
    "tiny": {"model": {"vit": "vit_demo", "img_size": [32, 32, 16], "patch_size": [16, 16, 8], "topk": 2,
                       "decoder_dim": 48, "decoder_depth": 1, "decoder_heads": 3, "text_max_tokens": 32,
                       "text_decoder_layers": 1, "proj_dim": 32}},
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


def _peak_rss_reset() -> bool:
    """Reset the process's peak resident memory (VmHWM) to the current one; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field))


def peak_bf16_flops(device: torch.device) -> tuple[float | None, str]:
    """Dense bf16 peak FLOP/s of the GPU: nominal for known names, else a measured 8192^3 bf16 GEMM."""
    if device.type != "cuda":
        return None, "n/a on CPU"
    from simcrop_kernels.bench import NOMINAL

    name = torch.cuda.get_device_name(device)
    for key, (flops, _) in NOMINAL.items():
        if key in name:
            return flops, f"nominal {key}"
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * 8192 ** 3 * 10 / (start.elapsed_time(end) * 1e-3), "measured bf16 GEMM 8192^3"


def time_objective(cfg, objective: str, batch: dict, steps: int, device: torch.device) -> dict:
    """Time `steps` training steps (after one warm-up step) of `objective`; see the module docstring."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = copy.deepcopy(cfg)
    cfg.model.objective = objective
    torch.manual_seed(0)
    model = build_pretrain_model(cfg.model).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    cuda = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step():
        with autocast():
            out = model(batch)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)

    step()  # warms up allocators and kernels, creates the optimiser state
    if cuda:
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss = _peak_rss_reset() and _rss_kb("VmRSS")
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        total_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = (_rss_kb("VmHWM") - rss) / 1024 if rss else None
        total_mb = _rss_kb("VmHWM") / 1024 if rss else None
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    # the fused SDPA kernels the counter knows (flash, efficient, cudnn); none seen: the math path (counted
    # as its matmuls) or a kernel without a FLOP formula, e.g. the CPU one (its FLOPs are then left out)
    ops = {str(op) for per_module in counter.get_flop_counts().values() for op in per_module}
    sdpa = sorted({name for op in ops if "scaled_dot_product" in op or "_attention_" in op
                   for name in ("flash", "efficient", "cudnn") if name in op}) or ["math or uncounted"]
    step_s = sum(times) / len(times)
    flops = counter.get_total_flops()
    samples = len(batch["volume_id"])
    return {"objective": objective, "batch": samples, "steps": steps, "samples_per_s": samples / step_s,
            "step_ms": step_s * 1e3, "peak_step_mb": peak_mb, "peak_total_mb": total_mb,
            "flops_per_step": flops, "achieved_tflops": flops / step_s / 1e12, "sdpa": sdpa,
            "precision": "bf16 autocast" if cuda else "fp32"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="demo,vit_base", help=f"comma list of {list(SIZES)}")
    parser.add_argument("--objectives", default="simcrop,mae", help="comma list of objectives to time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 demo, 2 vit_base on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: config (demo), 1 (vit_base CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write every row as JSON to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peak, peak_how = peak_bf16_flops(device)
    print(f"training throughput on {name} (fp32 on CPU, bf16 autocast on CUDA)")
    print(f"{'size':9} {'objective':10} {'batch':>5} {'samples/s':>10} {'ms/step':>9} {'peak MB':>9} "
          f"{'GFLOP/step':>11} {'TFLOP/s':>8} {'MFU':>6}  sdpa")
    rows = []
    for size in args.sizes.split(","):
        cfg = config_mod.load(["config/config.yaml"], [json.dumps(SIZES[size])])
        full_on_cpu = size == "vit_base" and device.type == "cpu"
        batch_size = args.batch_size or (1 if full_on_cpu else cfg.pretrain.batch_size)
        steps = args.steps or (2 if full_on_cpu else 5)
        batch = build_collate(cfg.model)(make_samples(cfg, batch_size))
        timed = {}
        for objective in args.objectives.split(","):
            row = {"size": size, **time_objective(cfg, objective, batch, steps, device)}
            row["mfu"] = row["achieved_tflops"] * 1e12 / peak if peak else None
            rows.append(row)
            timed[objective] = row
            peak_mb = "n/a" if row["peak_step_mb"] is None else f"{row['peak_step_mb']:.0f}"
            mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
            print(f"{size:9} {objective:10} {batch_size:5d} {row['samples_per_s']:10.3f} {row['step_ms']:9.1f} "
                  f"{peak_mb:>9} {row['flops_per_step'] / 1e9:11.1f} {row['achieved_tflops']:8.2f} {mfu:>6}  "
                  f"{','.join(row['sdpa'])}")
        if {"simcrop", "mae"} <= set(timed):
            print(f"{size:9} simcrop / mae samples/s: {timed['simcrop']['samples_per_s'] / timed['mae']['samples_per_s']:.2f}")
    if peak:
        print(f"MFU against {peak / 1e12:.0f} TFLOP/s dense bf16 ({peak_how})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": name, "peak_flops": peak, "peak_how": peak_how,
                                         "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
