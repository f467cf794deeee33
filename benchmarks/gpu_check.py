"""Helpers of benchmarks/gpu_check.sh: what machine this is (`probe`) and the one summary table (`report`).

    python benchmarks/gpu_check.py probe --json WORK/probe.json       # CUDA?, GPU name, clocks, versions
    python benchmarks/gpu_check.py report --work WORK --mode gpu --out gpu_check.md

`report` reads what each section of gpu_check.sh left in WORK — `<section>.status` (exit code, seconds,
time limit), `<section>.log`, and its results (`kernels.xml` junit, `bench.json`, `train.json`,
`loader.json`) — and prints one Markdown table: a row per kernel dtype (and the dtype-free kernel tests),
per benchmark pass, the training step and the loader. A section that exited non-zero, timed out or left no
results is FAIL with the reason; `report` then exits 1. With --out it also writes the table as Markdown and
everything as JSON (OUT.md and OUT.json; OUT may name either file).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SECTIONS = ("kernels", "bench", "train", "loader")
DTYPES = ("fp32", "fp16", "bf16")
TIMEOUT_CODES = (124, 137)            # timeout(1): limit reached; 137: killed after --kill-after
NO_CUDA = "no CUDA device"


# ------------------------------------------------------------------------------------------------- probe
def probe(out: Path) -> int:
    """Write {"cuda", "device", "torch", "triton", "nvidia_smi"}; exit 0 with CUDA, 3 without."""
    import torch

    info = {"cuda": torch.cuda.is_available(), "torch": torch.__version__}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if info["cuda"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["device_count"] = torch.cuda.device_count()
        try:
            q = "name,clocks.max.sm,power.limit,memory.total"
            smi = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()
            info["nvidia_smi"] = f"{q}: {smi[0]}" if smi else None
        except (OSError, subprocess.SubprocessError) as err:
            info["nvidia_smi"] = f"nvidia-smi unavailable: {err}"
    else:
        info["device"] = f"CPU ({torch.get_num_threads()} threads)"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1) + "\n")
    return 0 if info["cuda"] else 3


# ------------------------------------------------------------------------------------------------ report
def _row(check: str, status: str, result: str, seconds=None, limit=None) -> dict:
    return {"check": check, "status": status, "result": result, "seconds": seconds, "limit": limit}


def _status(work: Path, section: str) -> dict | None:
    path = work / f"{section}.status"
    if not path.exists():
        return None
    values = dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)
    return {"rc": int(values.get("rc", -1)), "seconds": float(values.get("seconds", 0)),
            "limit": int(values.get("limit", 0))}


def _tail(work: Path, section: str, lines: int = 3) -> str:
    """The last meaningful lines of a section's log, on one line (the reason of a failure)."""
    path = work / f"{section}.log"
    if not path.exists():
        return "no log"
    text = [line.strip() for line in path.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith(("Loading weights", "  warnings.warn"))]
    return " | ".join(text[-lines:])[-300:] or "empty log"


def _failed_run(work: Path, section: str, st: dict | None) -> str | None:
    """Why a section gave nothing usable (None: it ran to the end)."""
    if st is None:
        return "did not run"
    if st["rc"] in TIMEOUT_CODES:
        return f"timed out after {st['limit']} s: {_tail(work, section, 1)}"
    if st["rc"] != 0:
        return f"exit {st['rc']}: {_tail(work, section)}"
    return None


def _dtype_of(name: str) -> str:
    params = name[name.find("["):] if "[" in name else ""
    for dtype in DTYPES:
        if re.search(rf"(?<![a-z0-9]){dtype}(?![a-z0-9])", params):
            return dtype
    return "bf16" if "bfloat16" in name else "other"


def kernel_rows(work: Path, st: dict | None, smoke: bool) -> list[dict]:
    """One row per dtype (+ 'other': the dtype-free tests) from the junit file of the kernel tests."""
    seconds, limit = (st or {}).get("seconds"), (st or {}).get("limit")
    where = "CPU interpreter" if smoke else "CUDA, compiled"
    xml = work / "kernels.xml"
    if not xml.exists() or (st and st["rc"] in TIMEOUT_CODES):
        reason = _failed_run(work, "kernels", st) or "no junit report"
        return [_row(f"kernels {d} ({where})", "FAIL", reason, seconds, limit) for d in (*DTYPES, "other")]
    groups = {d: {"passed": 0, "failed": [], "skipped": 0, "skip_reason": ""} for d in (*DTYPES, "other")}
    for case in ET.parse(xml).getroot().iter("testcase"):
        group = groups[_dtype_of(case.get("name", ""))]
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            message = (bad.get("message") or "").strip().splitlines()
            group["failed"].append(f"{case.get('name')}: {message[0][:120] if message else bad.tag}")
        elif skipped is not None:
            group["skipped"] += 1
            group["skip_reason"] = (skipped.get("message") or "").strip()
        else:
            group["passed"] += 1
    rows = []
    for dtype, g in groups.items():
        total = g["passed"] + len(g["failed"]) + g["skipped"]
        check = f"kernels {dtype} ({where})"
        if g["failed"]:
            rows.append(_row(check, "FAIL", f"{len(g['failed'])} of {total} failed: " + "; ".join(g["failed"][:3]),
                             seconds, limit))
        elif g["passed"]:
            skipped = f", {g['skipped']} skipped" if g["skipped"] else ""
            rows.append(_row(check, "PASS", f"{g['passed']} passed{skipped}", seconds, limit))
        elif dtype == "bf16" and smoke:
            rows.append(_row(check, "SKIP", "bf16 tl.dot is wrong in the Triton interpreter: CUDA only",
                             seconds, limit))
        elif total:
            rows.append(_row(check, "SKIP", f"{g['skipped']} skipped: {g['skip_reason'][:160]}", seconds, limit))
        elif not smoke:
            rows.append(_row(check, "FAIL", "no test ran for this dtype", seconds, limit))
    if st and st["rc"] not in (0, 1) and not any(r["status"] == "FAIL" for r in rows):   # pytest usage error etc.
        rows.append(_row(f"kernels ({where})", "FAIL", f"pytest exit {st['rc']}: {_tail(work, 'kernels')}",
                         seconds, limit))
    return rows


def _load(work: Path, name: str) -> dict | None:
    path = work / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench_rows(work: Path, st: dict | None) -> list[dict]:
    seconds, limit = (st or {}).get("seconds"), (st or {}).get("limit")
    data = None if _failed_run(work, "bench", st) else _load(work, "bench.json")
    if not data or not data.get("rows"):
        return [_row("kernel bench", "FAIL", _failed_run(work, "bench", st) or "no results in bench.json",
                     seconds, limit)]
    rows = data["rows"]
    shape = "×".join(str(x) for x in rows[0]["shape"]) + f" {rows[0]['mode']}, {data['dtype']}"
    if data["device"] == "cpu":
        parts = [f"K {r['k']}: chunked vs plain time {r['chunked_ms'] / r['reference_ms']:.2f}×, peak "
                 f"{r['chunked_peak_mb']:.1f} vs {r['reference_peak_mb']:.1f} MB, same indices "
                 f"{r['identical_indices']}" for r in rows]
        ok = all(r["identical_indices"] for r in rows)
        return [_row(f"kernel bench {shape} (CPU; roofline n/a)", "PASS" if ok else "FAIL", "; ".join(parts),
                     seconds, limit)]
    out = []
    for name in ("fwd", "fwd+bwd"):
        sel = [r for r in rows if r["pass"] == name]
        if not sel:
            continue
        ks = "/".join(str(r["k"]) for r in sel)
        result = (f"K {ks}: speed-up over naive " + "/".join(f"{r['speedup']:.1f}" for r in sel) + "×, roofline "
                  + "/".join(f"{100 * r['roof_fraction']:.0f}" for r in sel) + " %, peak MB Triton "
                  + "/".join(f"{r['triton_peak_mb']:.0f}" for r in sel) + " vs naive "
                  + "/".join(f"{r['naive_peak_mb']:.0f}" for r in sel))
        out.append(_row(f"kernel bench {shape} {name}", "PASS", result, seconds, limit))
    return out


def train_rows(work: Path, st: dict | None) -> tuple[list[dict], float | None]:
    """The training step's row and its samples/s (what the loader has to keep up with)."""
    seconds, limit = (st or {}).get("seconds"), (st or {}).get("limit")
    data = None if _failed_run(work, "train", st) else _load(work, "train.json")
    if not data or not data.get("rows"):
        return [_row("pre-training step", "FAIL", _failed_run(work, "train", st) or "no results in train.json",
                     seconds, limit)], None
    r = data["rows"][0]
    mfu = "MFU n/a (CPU)" if r.get("mfu") is None else f"MFU {100 * r['mfu']:.1f} % of {data['peak_flops'] / 1e12:.0f} TFLOP/s"
    peak = "n/a" if r.get("peak_step_mb") is None else f"{r['peak_step_mb'] / 1024:.2f} GiB"
    result = (f"{r['samples_per_s']:.2f} samples/s ({r['step_ms']:.0f} ms/step), peak memory {peak}, "
              f"{r['flops_per_step'] / 1e12:.2f} TFLOP/step, {mfu}; {r['precision']}, SDPA {','.join(r['sdpa'])}")
    return [_row(f"pre-training step {r['size']} {r['objective']} batch {r['batch']}", "PASS", result, seconds,
                 limit)], r["samples_per_s"]


def loader_rows(work: Path, st: dict | None, step_rate: float | None) -> list[dict]:
    seconds, limit = (st or {}).get("seconds"), (st or {}).get("limit")
    data = None if _failed_run(work, "loader", st) else _load(work, "loader.json")
    if not data:
        return [_row("loader vs step", "FAIL", _failed_run(work, "loader", st) or "no results in loader.json",
                     seconds, limit)]
    cache = data["cache_samples_per_s"]
    result = (f"loader {cache:.2f} samples/s per core from the cache, {data['nifti_samples_per_s']:.2f} from NIfTI"
              f" (cache / NIfTI {data['ratio']:.1f}×)")
    if not data["identical_samples"]:
        return [_row("loader vs step", "FAIL", result + "; the cache and NIfTI gave different samples",
                     seconds, limit)]
    status = "PASS"
    if step_rate:
        keeps_up, workers = cache / step_rate, math.ceil(step_rate / cache)
        result += (f"; the step consumes {step_rate:.2f} samples/s: loader / step {keeps_up:.2f}× per core, "
                   f"{workers} DataLoader worker(s) keep up")
        if keeps_up < 1:
            status, result = "WARN", result + " (one worker cannot: set pretrain.num_workers)"
    else:
        result += "; no step rate to compare with"
    return [_row("loader vs step", status, result, seconds, limit)]


def build(work: Path, mode: str) -> dict:
    smoke = mode == "cpu-smoke"
    info = _load(work, "probe.json") or {}
    if not smoke and not info.get("cuda"):
        reason = f"{NO_CUDA} (torch.cuda.is_available() is False); `--cpu-smoke` checks the plumbing on a CPU"
        rows = [_row(check, "FAIL", reason) for check in ("kernels (CUDA)", "kernel bench", "pre-training step",
                                                          "loader vs step")]
    else:
        status = {s: _status(work, s) for s in SECTIONS}
        rows = kernel_rows(work, status["kernels"], smoke) + bench_rows(work, status["bench"])
        step_rows, step_rate = train_rows(work, status["train"])
        rows += step_rows + loader_rows(work, status["loader"], step_rate)
    return {"mode": mode, "device": info.get("device", "unknown"), "nvidia_smi": info.get("nvidia_smi"),
            "torch": info.get("torch"), "triton": info.get("triton"), "rows": rows,
            "ok": not any(r["status"] == "FAIL" for r in rows)}


def markdown(summary: dict) -> str:
    lines = [f"GPU check ({summary['mode']}) on {summary['device']}; torch {summary['torch']}, "
             f"triton {summary['triton']}"]
    if summary.get("nvidia_smi"):
        lines.append(f"nvidia-smi {summary['nvidia_smi']}")
    lines += ["", "| check | status | result | s (limit) |", "|---|---|---|---|"]
    for r in summary["rows"]:
        took = "" if r["seconds"] is None else f"{r['seconds']:.0f} ({r['limit']})"
        result = r["result"].replace("|", "/")
        lines.append(f"| {r['check']} | {r['status']} | {result} | {took} |")
    failed = [r["check"] for r in summary["rows"] if r["status"] == "FAIL"]
    lines += ["", f"FAILED: {', '.join(failed)}" if failed else "all checks passed"]
    return "\n".join(lines) + "\n"


def out_paths(out: Path) -> tuple[Path, Path]:
    """(markdown, json) for --out: OUT.md and OUT.json, whether OUT names one of them or neither."""
    stem = out.with_suffix("") if out.suffix in (".md", ".json") else out
    return stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".json")


def report(work: Path, mode: str, out: Path | None, wall_s: float | None) -> int:
    summary = build(work, mode)
    summary["wall_s"] = wall_s
    text = markdown(summary)
    print(text, end="")
    if out is not None:
        md, js = out_paths(out)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text)
        js.write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if summary["ok"] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--json", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--mode", choices=("gpu", "cpu-smoke"), required=True)
    r.add_argument("--out", type=Path, default=None)
    r.add_argument("--wall-s", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "probe":
        return probe(args.json)
    return report(args.work, args.mode, args.out, args.wall_s)


if __name__ == "__main__":
    sys.exit(main())
