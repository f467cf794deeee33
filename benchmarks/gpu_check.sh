#!/usr/bin/env bash
# One-shot GPU check: at most ~8 minutes on one GPU, one summary table.
#
#   benchmarks/gpu_check.sh [--out FILE] [--cpu-smoke]
#
#   (a) kernels  the kernel tests (tests/kernels) compiled on CUDA, no interpreter: fp32, fp16, bf16
#   (b) bench    python -m simcrop_kernels.bench at the reference shape (512 x 32 x 2744 x 768, K 8/32/64, bf16):
#                speed-up over the naive PyTorch path, fraction of roofline, peak memory
#   (c) train    benchmarks/train.py: the ViT-B SimCroP pre-training step (bf16 autocast + SDPA, batch 16):
#                samples/s, peak memory, estimated model FLOP utilisation
#   (d) loader   benchmarks/loader.py: loader samples/s per core against what the step consumes (and how
#                many DataLoader workers keep up); FAIL when the cache and NIfTI samples differ
#
# Each section runs under its own `timeout` (GPU_CHECK_LIMIT_<SECTION> seconds overrides it), so a hang
# costs one section, not the run; a failing or timed-out section is FAIL with its reason in the table and
# the script exits 1 at the end. --out FILE also writes the table as Markdown and everything as JSON
# (FILE.md and FILE.json; FILE may name either). Without a CUDA device it says "no CUDA device" and exits 1.
# --cpu-smoke runs every section on the CPU with tiny shapes (kernels in the Triton interpreter, fp32/fp16
# only: bf16 tl.dot is wrong there) in well under a minute: tests/benchmarks/test_gpu_check.py runs it.
# PYTHON picks the interpreter (default: .venv/bin/python when present, else python3).
set -uo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

MODE=gpu
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) MODE=cpu-smoke ;;
        --out) [ $# -ge 2 ] || { echo "--out needs a file name" >&2; exit 2; }; OUT=$2; shift ;;
        --out=*) OUT=${1#--out=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

CALLER=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ -n "$OUT" ]; then
    case "$OUT" in /*) ;; *) OUT="$CALLER/$OUT" ;; esac   # relative to where the script was called from
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%03d' $(( ms / 1000 )) $(( ms % 1000 )); }
STARTED=$(now_ms)

# Seconds per section. GPU: 20 (probe) + 170 + 90 + 120 + 60 = 460 s at most, under 8 minutes.
if [ "$MODE" = gpu ]; then
    L_KERNELS=${GPU_CHECK_LIMIT_KERNELS:-170}; L_BENCH=${GPU_CHECK_LIMIT_BENCH:-90}
    L_TRAIN=${GPU_CHECK_LIMIT_TRAIN:-120};     L_LOADER=${GPU_CHECK_LIMIT_LOADER:-60}
else
    L_KERNELS=${GPU_CHECK_LIMIT_KERNELS:-60};  L_BENCH=${GPU_CHECK_LIMIT_BENCH:-30}
    L_TRAIN=${GPU_CHECK_LIMIT_TRAIN:-60};      L_LOADER=${GPU_CHECK_LIMIT_LOADER:-40}
fi

# section NAME LIMIT CMD...: run CMD under `timeout`, log to WORK/NAME.log, exit code and time to NAME.status
section() {
    local name=$1 limit=$2 start rc
    shift 2
    echo "[gpu_check] $name (limit ${limit} s): $*" >&2
    start=$(now_ms)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    echo "rc=$rc limit=$limit seconds=$(since "$start")" > "$WORK/$name.status"
    [ "$rc" -eq 0 ] || echo "[gpu_check] $name: exit $rc (see the table)" >&2
}

timeout 20 "$PYTHON" benchmarks/gpu_check.py probe --json "$WORK/probe.json" > "$WORK/probe.log" 2>&1
PROBE=$?
if [ "$MODE" = gpu ] && [ "$PROBE" -ne 0 ]; then
    echo "[gpu_check] no CUDA device: nothing to measure (use --cpu-smoke on a machine without a GPU)" >&2
    [ -s "$WORK/probe.json" ] || echo '{"cuda": false, "device": "unknown (probe failed)"}' > "$WORK/probe.json"
else
    if [ "$MODE" = gpu ]; then
        export TRITON_INTERPRET=0          # compiled kernels everywhere below
        section kernels "$L_KERNELS" env SIMCROP_KERNEL_DEVICE=cuda TRITON_INTERPRET=0 \
            "$PYTHON" -m pytest -q -p no:cacheprovider tests/kernels --junitxml="$WORK/kernels.xml"
        section bench "$L_BENCH" "$PYTHON" -m simcrop_kernels.bench --device cuda --shapes reference \
            --ks 8,32,64 --dtype bf16 --json "$WORK/bench.json"
        section train "$L_TRAIN" "$PYTHON" benchmarks/train.py --device cuda --sizes vit_base \
            --objectives simcrop --batch-size 16 --steps 10 --json "$WORK/train.json"
        LOADER_ARGS=(--samples 12)     # 5 loaders (gzip x 2, the cache in 3 codecs): ~30 s on 2 busy cores
    else
        export OMP_NUM_THREADS=1           # tiny shapes: extra intra-op threads only spin (shared CPUs)
        section kernels "$L_KERNELS" env SIMCROP_KERNEL_DEVICE=cpu TRITON_INTERPRET=1 \
            "$PYTHON" -m pytest -q -p no:cacheprovider tests/kernels/test_topk_similarity.py \
            -k well_separated --junitxml="$WORK/kernels.xml"
        section bench "$L_BENCH" "$PYTHON" -m simcrop_kernels.bench --device cpu --retrieval 16x4x300x32 \
            --ks 8 --reps 1 --json "$WORK/bench.json"
        section train "$L_TRAIN" "$PYTHON" benchmarks/train.py --device cpu --sizes tiny --objectives simcrop \
            --batch-size 2 --steps 1 --json "$WORK/train.json"
        LOADER_ARGS=(--smoke)
    fi
    section loader "$L_LOADER" "$PYTHON" benchmarks/loader.py "${LOADER_ARGS[@]}" --json "$WORK/loader.json"
fi

WALL=$(since "$STARTED")
REPORT_ARGS=(--work "$WORK" --mode "$MODE" --wall-s "$WALL")
[ -n "$OUT" ] && REPORT_ARGS+=(--out "$OUT")
"$PYTHON" benchmarks/gpu_check.py report "${REPORT_ARGS[@]}"
RC=$?
echo "[gpu_check] $MODE: ${WALL} s" >&2
exit $RC
