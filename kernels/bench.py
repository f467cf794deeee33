"""Benchmark: Triton vs the naive PyTorch path (GPU), chunked vs plain reference (CPU).

    python -m simcrop_kernels.bench                                   # CUDA if available, else CPU
    python -m simcrop_kernels.bench --device cuda --shapes reference,training --ks 8,32,64 --dtype bf16
    python -m simcrop_kernels.bench --device cpu --retrieval 128x64x2744x768 --ks 32

GPU: median ms (triton.testing.do_bench, L2 flushed) of forward and forward + backward, achieved TFLOP/s
(similarity GEMM, 2·R·N·D; the pooling and backward GEMMs are implementation choices and not counted) and
GB/s (compulsory traffic: read S, P once, write the outputs; + gradients for fwd+bwd), the fraction of the
binding roofline (max of FLOP/peak and bytes/bandwidth over the measured time), peak memory above the
inputs (torch.cuda.max_memory_allocated), each against the naive path in the same process, with the GPU
name and clocks from nvidia-smi.  Roofs: nominal dense bf16 and HBM figures for known GPUs, else a
measured cuBLAS GEMM of the same shape and a measured device copy.
CPU: reference vs chunked forward time and peak resident memory (VmHWM, reset through
/proc/self/clear_refs before each run) at a retrieval shape (score only, as retrieval uses it).
--json OUT also writes every row as JSON (benchmarks/gpu_check.sh reads it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from .dispatch import topk_similarity

# name: (Ns, V, N, D, mode). 'training': per-GPU batch of 8 volumes, 2744 patches with 75 % MAE masking
# (686 visible), ~12 sentences per report; 'own' is the default loss, 'all' the batch-negatives option.
SHAPES = {
    "reference": [(512, 32, 2744, 768, "all")],
    "training": [(96, 8, 686, 768, "own"), (96, 8, 686, 768, "all")],
}
NOMINAL = {"H100 80GB HBM3": (989e12, 3.35e12), "H100 PCIe": (756e12, 2.0e12), "H200": (989e12, 4.8e12),
           "A100-SXM4-80GB": (312e12, 2.04e12), "A100-SXM4-40GB": (312e12, 1.56e12)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _inputs(Ns, V, N, D, mode, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    S = torch.nn.functional.normalize(torch.randn(Ns, D, device=device, generator=g), dim=-1).to(dtype)
    P = torch.nn.functional.normalize(torch.randn(V, N, D, device=device, generator=g), dim=-1).to(dtype)
    s2v = torch.arange(Ns, device=device) * V // Ns if mode == "own" else None  # contiguous per report
    return S, P, s2v


def _gpu_info() -> str:
    try:
        q = "name,clocks.sm,clocks.max.sm,clocks.mem,power.limit"
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
        return f"nvidia-smi ({q}): {out}"
    except (OSError, subprocess.SubprocessError) as err:
        return f"{torch.cuda.get_device_name()} (nvidia-smi unavailable: {err})"


def _roofs(Ns, V, N, D, dtype) -> tuple[float, float, str]:
    from triton.testing import do_bench
    name = torch.cuda.get_device_name()
    for key, (flops, bw) in NOMINAL.items():
        if key in name:
            return flops, bw, "nominal"
    a = torch.randn(Ns, D, device="cuda", dtype=dtype)
    b = torch.randn(D, V * N, device="cuda", dtype=dtype)
    flops = 2 * Ns * D * V * N / (do_bench(lambda: a @ b, return_mode="median") * 1e-3)
    x = torch.empty(1 << 28, device="cuda", dtype=torch.uint8)
    bw = 2 * x.numel() / (do_bench(lambda: x.clone(), return_mode="median") * 1e-3)
    return flops, bw, "measured cuBLAS GEMM / copy"


def _gpu_case(Ns, V, N, D, mode, k, dtype, backend):
    from triton.testing import do_bench
    S, P, s2v = _inputs(Ns, V, N, D, mode, dtype, "cuda")
    Sg, Pg = S.clone().requires_grad_(), P.clone().requires_grad_()
    kw = dict(mode=mode, sentence_to_volume=s2v, backend=backend)
    lead = (Ns,) if mode == "own" else (Ns, V)
    gs = torch.randn(lead, device="cuda")
    gp = torch.randn(lead + (D,), device="cuda")

    def fwd():
        with torch.no_grad():
            return topk_similarity(S, P, k, **kw)

    def fwd_bwd():
        r = topk_similarity(Sg, Pg, k, **kw)
        torch.autograd.backward([r.score, r.pooled], [gs, gp])

    out = {}
    for name, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        fn()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        ms = do_bench(fn, grad_to_none=[Sg, Pg], return_mode="median")
        out[name] = (ms, peak)
    return out


def _traffic(Ns, V, N, D, mode, k, dtype):
    R = Ns * (1 if mode == "own" else V)
    es = torch.finfo(dtype).bits // 8
    flops = 2 * R * N * D
    fwd_bytes = es * (Ns * D + V * N * D) + R * (12 * k + 4 + 4 * D)
    bwd_bytes = fwd_bytes + R * (4 + 4 * D) + es * (Ns * D + V * N * D)  # + read grads, write dS, dP
    return flops, fwd_bytes, bwd_bytes


def bench_gpu(shapes, ks, dtype) -> dict:
    """Print the table; return {"device", "dtype", "rows": [...], "roofs": [...]} for --json."""
    info = _gpu_info()
    rows, roofs = [], []
    print(info)
    print(f"dtype {dtype}, torch {torch.__version__}, timings: triton.testing.do_bench median (ms)")
    head = (f"{'shape (Ns×V×N×D, mode)':30} {'K':>3} {'pass':8} {'naive ms':>9} {'triton ms':>9} {'speedup':>7} "
            f"{'TFLOP/s':>8} {'GB/s':>7} {'roof %':>6} {'naive MB':>9} {'triton MB':>9} {'mem ratio':>9}")
    print(head)
    print("-" * len(head))
    for shape in shapes:
        for Ns, V, N, D, mode in SHAPES[shape]:
            peak_flops, peak_bw, how = _roofs(Ns, V, N, D, dtype)
            for k in ks:
                flops, fb, bb = _traffic(Ns, V, N, D, mode, k, dtype)
                naive = _gpu_case(Ns, V, N, D, mode, k, dtype, "reference")
                fast = _gpu_case(Ns, V, N, D, mode, k, dtype, "triton")
                for name, nbytes, nflops in (("fwd", fb, flops), ("fwd+bwd", bb, flops)):
                    (t0, m0), (t1, m1) = naive[name], fast[name]
                    roof = max(nflops / peak_flops, nbytes / peak_bw) / (t1 * 1e-3)
                    rows.append({"shape": [Ns, V, N, D], "mode": mode, "k": k, "pass": name, "naive_ms": t0,
                                 "triton_ms": t1, "speedup": t0 / t1, "tflops": nflops / t1 / 1e9,
                                 "gbps": nbytes / t1 / 1e6, "roof_fraction": roof, "naive_peak_mb": m0 / 2**20,
                                 "triton_peak_mb": m1 / 2**20, "memory_ratio": m0 / max(m1, 1)})
                    print(f"{f'{Ns}×{V}×{N}×{D} {mode}':30} {k:>3} {name:8} {t0:9.3f} {t1:9.3f} {t0 / t1:6.1f}× "
                          f"{nflops / t1 / 1e9:8.1f} {nbytes / t1 / 1e6:7.0f} {100 * roof:5.0f}% "
                          f"{m0 / 2**20:9.1f} {m1 / 2**20:9.1f} {m0 / max(m1, 1):8.1f}×")
            print(f"  roofs ({how}): {peak_flops / 1e12:.0f} TFLOP/s, {peak_bw / 1e9:.0f} GB/s")
            roofs.append({"shape": [Ns, V, N, D], "mode": mode, "tflops": peak_flops / 1e12,
                          "gbps": peak_bw / 1e9, "how": how})
    print("goals: speedup fwd+bwd >= 5×, roof >= 60 %, memory ratio >= 10×")
    return {"device": "cuda", "info": info, "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__, "rows": rows, "roofs": roofs}


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def _peak_rss_mb(fn) -> float:
    """Peak resident memory of one call above the resident memory before it (Linux only)."""
    import ctypes
    import gc
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, or reused pages would hide the peak
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    before = _vm_hwm_kb()
    fn()
    return (_vm_hwm_kb() - before) / 1024


def bench_cpu(retrieval: str, ks, dtype, reps: int) -> dict:
    """Print the table; return {"device", "dtype", "rows": [...]} for --json."""
    Ns, V, N, D = (int(x) for x in retrieval.split("x"))
    rows = []
    print(f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, dtype {dtype}; retrieval shape "
          f"{Ns} sentences × {V} volumes × {N} patches × D {D}, mode 'all', score only, no grad")
    head = f"{'K':>3} {'backend':10} {'median ms':>10} {'peak RSS MB':>12} {'sims+keys MB (plain)':>21}"
    print(head)
    print("-" * len(head))
    S, P, _ = _inputs(Ns, V, N, D, "all", dtype, "cpu")
    for k in ks:
        results = {}
        for backend in ("reference", "chunked"):
            def fn():
                with torch.no_grad():
                    return topk_similarity(S, P, k, mode="all", return_pooled=False, backend=backend)
            peak = _peak_rss_mb(fn)
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
            results[backend] = (statistics.median(times), peak)
            print(f"{k:>3} {backend:10} {results[backend][0]:10.1f} {peak:12.1f} {Ns * V * N * 12 / 2**20:21.1f}")
        (t0, m0), (t1, m1) = results["reference"], results["chunked"]
        print(f"    chunked vs plain: time {t1 / t0:.2f}×, peak memory {m1 / max(m0, 1e-9):.3f}×")
        same = torch.equal(topk_similarity(S, P, k, mode="all", backend="reference", return_pooled=False).indices,
                           topk_similarity(S, P, k, mode="all", backend="chunked", return_pooled=False).indices)
        print(f"    identical indices: {same}")
        rows.append({"shape": [Ns, V, N, D], "mode": "all", "k": k, "pass": "fwd", "reference_ms": t0,
                     "chunked_ms": t1, "speedup": t0 / t1, "reference_peak_mb": m0, "chunked_peak_mb": m1,
                     "memory_ratio": m0 / max(m1, 1e-9), "identical_indices": same})
    return {"device": "cpu", "info": f"CPU, {torch.get_num_threads()} threads",
            "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__, "rows": rows}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", default="reference,training", help=f"comma list of {sorted(SHAPES)} (GPU)")
    p.add_argument("--ks", default="8,32,64")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--retrieval", default="128x64x2744x768", help="NsxVxNxD for the CPU comparison")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions on CPU")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    a = p.parse_args(argv)
    ks = [int(k) for k in a.ks.split(",")]
    if a.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible")
        shapes = a.shapes.split(",")
        unknown = set(shapes) - set(SHAPES)
        if unknown:
            raise SystemExit(f"unknown shapes {sorted(unknown)}; choose from {sorted(SHAPES)}")
        result = bench_gpu(shapes, ks, DTYPES[a.dtype or "bf16"])
    else:
        result = bench_cpu(a.retrieval, ks, DTYPES[a.dtype or "fp32"], a.reps)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
