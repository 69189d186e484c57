"""Batched chat generation (docs/architecture.md §2): left padding, the model's chat template, greedy by default.

``GenerationEngine`` is the interface every backend implements; ``HFEngine`` is the transformers
backend. A vLLM backend would implement the same ``generate`` and be chosen by the Policy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class GenConfig:
    """Decoding settings. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16
    # Rows x (longest prompt + new tokens) per batch: long jailbreak templates (up to ~1,500
    # tokens) go in small batches instead of padding 64 short prompts up to their length.
    max_batch_tokens: int = 8192
    # Text that ends a completion as a stop token does (lm-eval's ``until``: "\nclass" for
    # HumanEval): decoding stops there instead of running to max_new_tokens.
    stop_strings: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def key(self) -> dict[str, Any]:
        """Settings that change outputs (batching does not, up to float noise) for fingerprints."""
        data = asdict(self)
        data.pop("batch_size")
        data.pop("max_batch_tokens")
        if not data["stop_strings"]:
            data.pop("stop_strings")  # keeps the fingerprints of generations from before the field
        else:
            data["stop_strings"] = list(data["stop_strings"])
        return data


def token_batches(lengths: Sequence[int], cfg: GenConfig) -> list[list[int]]:
    """Indices of ``lengths`` (prompt tokens) grouped into batches, longest first: at most
    ``cfg.batch_size`` rows, and at most ``cfg.max_batch_tokens`` padded positions, counting
    the new tokens, unless one prompt alone exceeds it."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    while order:
        width = lengths[order[0]] + cfg.max_new_tokens  # sorted: the first row is the longest
        rows = max(1, min(cfg.batch_size, cfg.max_batch_tokens // width))
        batches.append(order[:rows])
        order = order[rows:]
    return batches


@dataclass
class Completion:
    """One prompt's generation and its token accounting."""

    prompt: str
    text: str
    prompt_tokens: int
    new_tokens: int
    finished: bool  # stopped at an end-of-turn/EOS token rather than the token limit
    token_ids: list[int] = field(default_factory=list, repr=False)
    seconds: float | None = None  # per-response decoding wall time, where the backend measures it


@dataclass
class GenerationStats:
    """What one ``generate`` call spent."""

    prompts: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


class GenerationEngine(Protocol):
    def generate(self, prompts: Sequence[str], cfg: GenConfig, progress: bool = True) -> list[Completion]: ...


def chat_text(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The prompt wrapped in the model's chat template (base models without one get it raw).

    ``system``: a system prompt, as a system turn where the template has a system role; a
    template that rejects one (Gemma's raises) and models without a template get it prepended
    to the user's text, separated by a blank line.
    """
    if not getattr(tokenizer, "chat_template", None):
        return f"{system}\n\n{prompt}" if system else prompt
    messages = [{"role": "user", "content": prompt}]
    if system:
        from jinja2.exceptions import TemplateError

        try:
            return tokenizer.apply_chat_template([{"role": "system", "content": system}, *messages],
                                                 tokenize=False, add_generation_prompt=True)
        except TemplateError:  # the template's raise_exception("System role not supported")
            messages = [{"role": "user", "content": f"{system}\n\n{prompt}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a turn: the generation config's EOS ids plus the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


class HFEngine:
    """transformers ``generate`` over length-sorted batches with left padding."""

    def __init__(self, model: Any, tokenizer: Any, system: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.system = system  # a system prompt for every prompt (spec teacher, prompt-control)
        self.last_stats = GenerationStats()

    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        texts = [chat_text(self.tokenizer, p, self.system) for p in prompts]
        # The chat template already holds BOS/special tokens; adding them again would double them.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in enc.items()}

    def generate(self, prompts: Sequence[str], cfg: GenConfig, progress: bool = True) -> list[Completion]:
        start = time.perf_counter()
        # Sorting by length keeps padding (wasted compute) small within each batch.
        lengths = [len(ids) for ids in self.tokenizer([chat_text(self.tokenizer, p, self.system) for p in prompts],
                                                      add_special_tokens=False)["input_ids"]]
        results: list[Completion | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False)
        b = 0
        for idx in token_batches(lengths, cfg):
            batch_start = time.perf_counter()
            batch = self._batch([prompts[i] for i in idx], cfg, seed=cfg.seed + b)
            # A batch decodes its rows together: each row is charged an equal share of its time.
            share = (time.perf_counter() - batch_start) / max(1, len(idx))
            for i, completion in zip(idx, batch):
                completion.seconds = share
                results[i] = completion
            bar.update(len(idx))
            b += len(idx)
        bar.close()
        done = [r for r in results if r is not None]
        self.last_stats = GenerationStats(
            len(done), sum(c.prompt_tokens for c in done), sum(c.new_tokens for c in done),
            time.perf_counter() - start,
        )
        return done

    @torch.inference_mode()
    def _batch(self, prompts: list[str], cfg: GenConfig, seed: int) -> list[Completion]:
        enc = self.encode(prompts)
        stops = stop_token_ids(self.model, self.tokenizer)
        sampling: dict[str, Any] = {"do_sample": False}
        if not cfg.greedy:
            torch.manual_seed(seed)
            sampling = {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0}
        if cfg.stop_strings:
            sampling.update(stop_strings=list(cfg.stop_strings), tokenizer=self.tokenizer)
        out = self.model.generate(
            **enc, max_new_tokens=cfg.max_new_tokens, eos_token_id=stops,
            pad_token_id=self.tokenizer.pad_token_id, **sampling,
        )
        new = out[:, enc["input_ids"].shape[1]:]
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        return [self._completion(p, row.tolist(), n, stops) for p, row, n in zip(prompts, new, prompt_lengths)]

    def _completion(self, prompt: str, row: list[int], prompt_tokens: int, stops: list[int]) -> Completion:
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        ids = row if cut is None else row[:cut]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(prompt, text, prompt_tokens, len(ids) + (cut is not None), cut is not None, ids)
