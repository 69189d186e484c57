#!/usr/bin/env bash
# The GPU checks of issue 18 in one go, on any machine with an NVIDIA GPU and PyPI access:
#
#   bash scripts/gpu_check.sh                 # ~20-30 min on one GPU, most of it set-up
#   DATA=/path/to/datasets OUT=runs/gpu bash scripts/gpu_check.sh
#
# Prints, section by section: the GPU; the paper-profile dry run of the headline command for
# qwen2-7b (memory per stage, wall time, refusal if it cannot fit: nothing is downloaded); the
# six-method quick comparison on the embedded SmolLM2-135M with the HF engine and with the vLLM
# engine (wall time, stage times, peak CUDA memory, which engine made each row); the vLLM-vs-HF
# greedy equality test; and generated tokens/s of both engines side by side. The embedded model
# ships in a pip package, so no Hugging Face hub access is needed.
#
# vLLM for GPUs is the `vllm` package, which pins its own torch: it gets its own venv
# (.venv-vllm, `make setup-vllm VLLM=vllm TORCH=torch`), as the CPU build does on CPU machines.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/gpu-check}
DATA=${DATA:-../shared/datasets}
METHODS=${METHODS:-base,steering,sft,global-kl,safesteer,alignbeam}
TORCH=${TORCH:-torch==2.13.0}
VLLM=${VLLM:-vllm}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

section() { printf '\n==== %s ====\n' "$*"; }

section "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || { echo "error: no NVIDIA GPU visible (nvidia-smi failed) — run this on a CUDA machine" >&2; exit 2; }

section "set-up (.venv, torch ${TORCH})"
make setup TORCH="$TORCH"
.venv/bin/python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("error: this torch build sees no CUDA device — re-run with TORCH=<a CUDA build of torch>")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

section "dry run of the headline command: safesteer,sft on qwen2-7b (paper profile on a GPU)"
# exit 2 (does not fit) is a result here, not a failure of the check
.venv/bin/safesteer-bench run --methods safesteer,sft --model qwen2-7b --dry-run \
  --out "$OUT" --data-dir "$DATA" || echo "(refused: exit $?)"

summary() {  # wall time, stages, peak memory and engines of a finished run
  "$1" - "$2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
t = doc["timing"]
print(f"wall {t['wall_seconds'] / 60:.1f} min; stages " + ", ".join(f"{k} {v:.0f}s" for k, v in t["stages"].items()))
print(f"peak CUDA {t.get('peak_cuda_gb', 'n/a')} GB, peak RSS {t.get('peak_rss_gb')} GB")
for m, info in doc["methods"].items():
    print(f"  {m:12s} engine {info.get('engine', 'hf')}")
PY
}

section "six-method quick comparison, HF engine"
.venv/bin/safesteer-bench run --methods "$METHODS" --model smollm2-135m --profile quick --device cuda \
  --engine hf --out "$OUT" --run-id quick-hf --data-dir "$DATA"
summary .venv/bin/python "$OUT/quick-hf/results.json"

section "set-up of the vLLM venv (${VLLM})"
make setup-vllm VLLM="$VLLM" TORCH=torch

section "vLLM vs HF: greedy equality test"
make test-vllm DATA="$DATA"

section "generated tokens/s, HF vs vLLM"
.venv-vllm/bin/python scripts/bench_vllm.py --batch-sizes 16,64,256 --prompts 256

section "on-policy rollouts: HF vs vLLM (adapter sync on CUDA), 8 prompts x 8 samples x 128 tokens"
for rollouts in hf vllm; do
  .venv-vllm/bin/python scripts/bench_distill.py --rollouts "$rollouts" --prompts 8 --samples 8 --tokens 128 \
    --steps 4 --device cuda --data-dir "$DATA"
done

section "six-method quick comparison, vLLM engine (hooked policies stay on HF)"
.venv-vllm/bin/safesteer-bench run --methods "$METHODS" --model smollm2-135m --profile quick --device cuda \
  --engine vllm --out "$OUT" --run-id quick-vllm --data-dir "$DATA"
summary .venv-vllm/bin/python "$OUT/quick-vllm/results.json"
echo "reports: $OUT/quick-hf/report.html $OUT/quick-vllm/report.html"
