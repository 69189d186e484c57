"""Capability suites through lm-eval, offline, on any Policy (docs/architecture.md §5).

One call does it::

    results = run_capability(policy, [BENCHMARKS.get("arc-easy")], limit=20, data_dir=None,
                             output_dir=run_dir / "capability" / method)

How it works:

- **Model.** :class:`PolicyLM` is lm-eval's own ``HFLM`` built on ``policy.model`` and
  ``policy.tokenizer`` (``HFLM(pretrained=model, tokenizer=tokenizer, batch_size=...)``); each of
  its request methods (``loglikelihood``, ``loglikelihood_rolling``, ``generate_until``) runs
  inside ``policy.active()``, so steering hooks are installed and a LoRA adapter is switched per
  the policy for exactly the duration of every request batch. lm-eval does all tokenization,
  batching and scoring itself; nothing is re-implemented.
- **Decoders.** A policy with a ``decoder`` (alignbeam: decoding is not a plain forward pass) has
  its ``generate_until`` requests answered by ``policy.generate`` (the decoder; it receives lm-eval's
  context as the prompt, and lm-eval's stop strings are applied to its text afterwards);
  log-likelihood requests always go through ``policy.model``. Every result records which path
  scored it (``scored_via``).
- **Cache.** lm-eval's response cache (``use_cache``, a sqlite file) is keyed by the request
  alone, so one file per model is the only safe use: the file is
  ``<cache>/lmeval/responses/<policy.fingerprint>_rank0.db``, never a model name.
- **Tasks.** Local task YAMLs in ``safesteer_bench/evaluation/lmeval_tasks/`` mirror lm-eval's own tasks
  (same prompts, targets, filters and metrics; task names prefixed ``ssb_``) but read local
  files. :func:`prepare_tasks` resolves every data key through :func:`safesteer_bench.data.resolve`
  (so ``--data-dir`` / ``$SAFESTEER_BENCH_DATA`` apply), converts the files that are not
  already in the Hugging Face schema lm-eval's prompts expect (AI2 ARC JSONL, TruthfulQA
  mc_task.json, MMLU CSVs with index answers, gzip HumanEval) into JSONL under the cache, keyed
  by content hash, and renders the YAMLs with those paths (plus the 57 MMLU subject tasks) into
  a task folder that the lm-eval CLI can also use: ``lm_eval --include_path <folder> --tasks
  ssb_arc_easy ...``. A benchmark whose ``task`` is not one of ours is looked up among lm-eval's
  own tasks (needs the hub, i.e. online).
- **Code execution.** HumanEval runs model-written code. Without ``allow_code_execution=True``
  (CLI ``--allow-code-execution``) it is *skipped*, not run: its entry says so and how to opt in
  (so a suite run still finishes). With the opt-in, each program runs in its own
  ``python -I`` subprocess in a temp folder with a timeout (:func:`pass_at_k`).
- **Limits.** ``limit`` counts documents per benchmark and is passed to lm-eval as its
  ``limit`` (the first ``limit`` documents of the task), except that a group spreads it over
  its subtasks: MMLU at limit 20 takes the first ceil(20/57) = 1 question of each of the 57
  subjects (57 questions), not lm-eval's 57 × 20 (:func:`task_limit`). ``None`` = all.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from safesteer_bench.data import read_csv, resolve
from safesteer_bench.errors import UserError
from safesteer_bench.paths import cache_dir

log = logging.getLogger(__name__)

HIGHER = "higher is better"
CODE_EXECUTION_ENV = "HF_ALLOW_CODE_EVAL"  # the convention of HF's code_eval, for CLI reuse
CODE_TIMEOUT_S = 10.0
OPT_IN_FIX = ("pass --allow-code-execution (run_capability(..., allow_code_execution=True)) to "
              "run HumanEval: it executes model-written code, each program in its own Python "
              f"subprocess with a {CODE_TIMEOUT_S:g} s timeout")
PREPARE_VERSION = "1"  # bump when a converter or the rendering changes

MMLU_SUBJECTS: dict[str, str] = {  # subject -> category, as lm-eval's tasks/mmlu
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem",
    "business_ethics": "other", "clinical_knowledge": "other", "college_biology": "stem",
    "college_chemistry": "stem", "college_computer_science": "stem",
    "college_mathematics": "stem", "college_medicine": "other", "college_physics": "stem",
    "computer_security": "stem", "conceptual_physics": "stem", "econometrics": "social_sciences",
    "electrical_engineering": "stem", "elementary_mathematics": "stem",
    "formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
    "high_school_chemistry": "stem", "high_school_computer_science": "stem",
    "high_school_european_history": "humanities", "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences", "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences", "high_school_physics": "stem",
    "high_school_psychology": "social_sciences", "high_school_statistics": "stem",
    "high_school_us_history": "humanities", "high_school_world_history": "humanities",
    "human_aging": "other", "human_sexuality": "social_sciences",
    "international_law": "humanities", "jurisprudence": "humanities",
    "logical_fallacies": "humanities", "machine_learning": "stem", "management": "other",
    "marketing": "other", "medical_genetics": "other", "miscellaneous": "other",
    "moral_disputes": "humanities", "moral_scenarios": "humanities", "nutrition": "other",
    "philosophy": "humanities", "prehistory": "humanities", "professional_accounting": "other",
    "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences", "virology": "other", "world_religions": "humanities",
}


@dataclass(frozen=True)
class LocalTask:
    """One of our local lm-eval tasks: its YAML, the data keys it reads, what it mirrors."""

    name: str
    data_keys: tuple[str, ...]
    lm_eval_equivalent: str
    output_type: str  # "multiple_choice" | "generate_until" (of its subtasks, for groups)
    primary: str  # the headline metric (lm-eval's / the Open LLM Leaderboard's)
    runs_code: bool = False


LOCAL_TASKS: dict[str, LocalTask] = {t.name: t for t in [
    LocalTask("ssb_mmlu", ("mmlu-test", "mmlu-dev"), "mmlu", "multiple_choice", "acc"),
    LocalTask("ssb_arc_challenge", ("arc-challenge-test",), "arc_challenge", "multiple_choice",
              "acc_norm"),
    LocalTask("ssb_arc_easy", ("arc-easy-test",), "arc_easy", "multiple_choice", "acc_norm"),
    LocalTask("ssb_gsm8k", ("gsm8k-test",), "gsm8k", "generate_until",
              "exact_match,strict-match"),
    LocalTask("ssb_truthfulqa_mc2", ("truthfulqa-mc",), "truthfulqa_mc2", "multiple_choice",
              "acc"),
    LocalTask("ssb_humaneval", ("humaneval",), "humaneval", "generate_until", "pass@1",
              runs_code=True),
    LocalTask("ssb_ifeval", ("ifeval",), "ifeval", "generate_until", "prompt_level_strict_acc"),
]}

# --------------------------------------------------------------------------------------------
# Data preparation: local files -> JSONL in the schema of the HF datasets lm-eval's tasks use
# --------------------------------------------------------------------------------------------


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256(PREPARE_VERSION.encode())
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl_any(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = []
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {n}: not JSON ({e.msg})",
                                    "replace the file with an intact copy") from e
        return rows


def _arc_rows(path: Path) -> list[dict[str, Any]]:
    """AI2 ARC JSONL -> the allenai/ai2_arc schema (id, question, choices{text,label}, answerKey)."""
    out = []
    for n, r in enumerate(_read_jsonl_any(path), start=1):
        try:
            q = r["question"]
            choices = q["choices"]
            row = {"id": r["id"], "question": q["stem"],
                   "choices": {"text": [c["text"] for c in choices],
                               "label": [c["label"] for c in choices]},
                   "answerKey": r["answerKey"]}
        except (KeyError, TypeError) as e:
            raise UserError(f"{path} record {n}: not in the AI2 ARC format (missing {e})",
                            "use the ARC-V1-Feb2018 JSONL files") from e
        if row["answerKey"] not in row["choices"]["label"]:
            raise UserError(f"{path} record {n}: answerKey {row['answerKey']!r} is not a label",
                            "replace the file with an intact copy")
        out.append(row)
    return out


def _truthfulqa_rows(path: Path) -> list[dict[str, Any]]:
    """mc_task.json (answer -> 0/1 dicts) -> truthful_qa/multiple_choice (choices, labels)."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
        return [{"question": it["question"],
                 **{k: {"choices": list(it[k]), "labels": [int(v) for v in it[k].values()]}
                    for k in ("mc1_targets", "mc2_targets")}} for it in items]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise UserError(f"{path}: not a TruthfulQA mc_task.json ({e})",
                        "use data/v1/mc_task.json of sylinrl/TruthfulQA") from e


def _mmlu_rows(path: Path, subject: str) -> list[dict[str, Any]]:
    """Header CSV (question, choice0..3, answer index) -> cais/mmlu (question, subject, choices, answer).

    Read with the stdlib so numeric-looking choices ("0.50", "NaN") stay exactly as written."""
    out = []
    for n, r in read_csv(path, ["question", "choice0", "choice1", "choice2", "choice3", "answer"]):
        try:
            answer = int(r["answer"])
        except ValueError:
            answer = -1
        if not 0 <= answer <= 3:
            raise UserError(f"{path} line {n}: answer {r['answer']!r} is not an index 0-3",
                            "use the MMLU copy described in the data folder's MANIFEST.md")
        out.append({"question": r["question"], "subject": subject,
                    "choices": [r[f"choice{i}"] for i in range(4)], "answer": answer})
    return out


def _prepared(root: Path, name: str, digest: str, write: Callable[[Path], None]) -> Path:
    """``root/<name>-<digest>``, written by ``write`` into a temp folder and renamed into place
    (so a concurrent or interrupted run never sees half a folder)."""
    final = root / f"{name}-{digest}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        write(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _prepare_data(key: str, data_dir: str | Path | None, root: Path) -> dict[str, Any]:
    """Placeholder values for one data key: a path, or for MMLU a folder of per-subject files."""
    src = resolve(key, data_dir).path
    if key == "gsm8k-test":  # already {question, answer} JSONL, exactly openai/gsm8k
        return {key: str(src)}
    if key in ("arc-easy-test", "arc-challenge-test", "truthfulqa-mc", "humaneval", "ifeval"):
        convert = {"arc-easy-test": _arc_rows, "arc-challenge-test": _arc_rows,
                   "truthfulqa-mc": _truthfulqa_rows, "humaneval": _read_jsonl_any,
                   "ifeval": _read_jsonl_any}[key]
        folder = _prepared(root, key, _digest([src]),
                           lambda d: _write_jsonl(d / f"{key}.jsonl", convert(src)))
        return {key: str(folder / f"{key}.jsonl")}
    if key in ("mmlu-test", "mmlu-dev"):
        split = key.split("-")[1]
        files = [src / f"{s}_{split}.csv" for s in MMLU_SUBJECTS]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(f"MMLU folder {src} lacks {', '.join(missing[:3])}"
                            + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""),
                            "use the MMLU copy described in the data folder's MANIFEST.md")

        def write(d: Path) -> None:
            for subject, f in zip(MMLU_SUBJECTS, files):
                _write_jsonl(d / f"{subject}.jsonl", _mmlu_rows(f, subject))

        folder = _prepared(root, key, _digest(files), write)
        return {f"{key}:{s}": str(folder / f"{s}.jsonl") for s in MMLU_SUBJECTS}
    raise ValueError(f"no preparation rule for data key {key!r}")


# --------------------------------------------------------------------------------------------
# Task folder rendering
# --------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r'"\$\{([a-z0-9:_\-]+)\}"')
_UTILS_SHIM = '''"""Task helpers for the rendered safesteer-bench lm-eval tasks (generated; do not edit)."""
from safesteer_bench.evaluation.capability import (  # noqa: F401
    build_predictions, ifeval_agg_inst_level_acc, ifeval_process_results, pass_at_k,
    process_results_mc2,
)
'''


def _template(name: str) -> str:
    return resources.files("safesteer_bench.evaluation").joinpath("lmeval_tasks", name).read_text("utf-8")


def _render(text: str, values: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"task template needs data for {m.group(1)!r}")
        return json.dumps(values[m.group(1)])  # a JSON string is a valid YAML double-quoted scalar

    return _PLACEHOLDER.sub(sub, text)


def _mmlu_subject_yaml(subject: str, values: dict[str, str]) -> str:
    category = MMLU_SUBJECTS[subject]
    description = ("The following are multiple choice questions (with answers) about "
                   f"{subject.replace('_', ' ')}.\n\n")
    data = {"test": values[f"mmlu-test:{subject}"], "dev": values[f"mmlu-dev:{subject}"]}
    return "\n".join([
        'include: "_ssb_mmlu_template_yaml"',
        f"task: ssb_mmlu_{subject}",
        f"task_alias: {subject}",
        f"tag: ssb_mmlu_{category}_tasks",
        f"description: {json.dumps(description)}",
        f"dataset_kwargs: {json.dumps({'data_files': data})}",
        "",
    ])


def prepare_tasks(names: Sequence[str] | None = None, data_dir: str | Path | None = None,
                  cache: Path | None = None) -> Path:
    """Render the local tasks ``names`` (default: all whose data is found) into a task folder.

    Data is resolved with :func:`safesteer_bench.data.resolve` (``data_dir``, then
    ``$SAFESTEER_BENCH_DATA``, then the user cache); a missing file is a :class:`UserError`
    naming it. The folder lives under ``<cache>/lmeval/tasks-<hash>`` and is reused while its
    inputs are unchanged. Returns the folder (usable as ``lm_eval --include_path``).
    """
    root = Path(cache) if cache is not None else cache_dir()
    wanted = list(LOCAL_TASKS) if names is None else list(names)
    unknown = [n for n in wanted if n not in LOCAL_TASKS]
    if unknown:
        raise ValueError(f"not local tasks: {unknown}")
    values: dict[str, str] = {}
    for name in wanted:
        for key in LOCAL_TASKS[name].data_keys:
            try:
                values.update(_prepare_data(key, data_dir, root / "lmeval" / "data"))
            except UserError:
                if names is not None:
                    raise
                wanted = [w for w in wanted if w != name]  # default: skip tasks without data
                break
    files: dict[str, str] = {"utils.py": _UTILS_SHIM}
    for name in wanted:
        if name == "ssb_mmlu":
            files["_ssb_mmlu_template_yaml"] = _template("ssb_mmlu_template.yaml")
            for fname in ("ssb_mmlu.yaml", "ssb_mmlu_stem.yaml", "ssb_mmlu_other.yaml",
                          "ssb_mmlu_social_sciences.yaml", "ssb_mmlu_humanities.yaml"):
                files[fname] = _template(fname)
            for subject in MMLU_SUBJECTS:
                files[f"ssb_mmlu_{subject}.yaml"] = _mmlu_subject_yaml(subject, values)
        else:
            files[f"{name}.yaml"] = _render(_template(f"{name}.yaml"), values)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]

    def write(d: Path) -> None:
        for fname, text in files.items():
            (d / fname).write_text(text, encoding="utf-8")

    return _prepared(root / "lmeval", "tasks", digest, write)


# --------------------------------------------------------------------------------------------
# Task helpers referenced by the YAMLs (through the rendered utils.py shim)
# --------------------------------------------------------------------------------------------


def process_results_mc2(doc: dict, results: list) -> dict[str, float]:
    """TruthfulQA MC2, as lm-eval's ``truthfulqa.utils.process_results_mc2``: the normalised
    probability mass of the true answers."""
    import numpy as np

    ll, _ = zip(*results)
    probs = np.exp(np.array(ll))
    probs_norm = probs / np.sum(probs)
    labels = np.array(doc["mc2_targets"]["labels"])
    return {"acc": float(np.sum(probs_norm[labels == 1]))}


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """HumanEval filter, as lm-eval's: each program is the prompt followed by the completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


_code_execution = threading.local()


@contextlib.contextmanager
def code_execution_allowed(allowed: bool = True) -> Iterator[None]:
    """Within this block :func:`pass_at_k` may execute code (``run_capability`` sets it)."""
    before = getattr(_code_execution, "allowed", False)
    _code_execution.allowed = allowed
    try:
        yield
    finally:
        _code_execution.allowed = before


def _may_execute_code() -> bool:
    return getattr(_code_execution, "allowed", False) or os.environ.get(CODE_EXECUTION_ENV) == "1"


def run_program(program: str, timeout: float = CODE_TIMEOUT_S) -> bool:
    """Run ``program`` in a fresh isolated Python (``-I``: no user site, no cwd on sys.path) in
    an empty temp folder, stdin closed, with a timeout; True when it exits with status 0."""
    if not _may_execute_code():
        raise UserError("refusing to execute model-written code without the opt-in", OPT_IN_FIX)
    with tempfile.TemporaryDirectory(prefix="ssb-code-") as tmp:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": tmp,
               "TMPDIR": tmp, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            done = subprocess.run([sys.executable, "-I", "-c", program], cwd=tmp, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=timeout,
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0


def _pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int | None = None
              ) -> float:
    """HumanEval metric (lm-eval calls it once per problem): program = prediction + test code,
    each run by :func:`run_program`; returns pass@k for the first k (lm-eval's ``humaneval``
    reports pass@1 with one greedy sample)."""
    ks = [k] if isinstance(k, int) else list(k or [1])
    scores = []
    for test, programs in zip(references, predictions):
        passed = sum(run_program(p + "\n" + test + "\n") for p in programs)
        scores.append(_pass_at_k_estimate(len(programs), passed, ks[0]))
    return sum(scores) / len(scores) if scores else 0.0


def ifeval_missing() -> list[str]:
    """What lm-eval's IFEval needs and this environment lacks (empty: it can run offline)."""
    import importlib.util

    missing = [f"python package {m}" for m in ("langdetect", "immutabledict", "nltk")
               if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("nltk") is not None:
        import nltk

        try:
            nltk.data.find("tokenizers/punkt_tab")
        except LookupError:
            missing.append("nltk data punkt_tab")
    return missing


def ifeval_process_results(doc: dict, results: list) -> dict:
    from lm_eval.tasks.ifeval.utils import process_results

    return process_results(doc, results)


def ifeval_agg_inst_level_acc(items: list) -> float:
    from lm_eval.tasks.ifeval.utils import agg_inst_level_acc

    return agg_inst_level_acc(items)


# --------------------------------------------------------------------------------------------
# The Policy as an lm-eval model
# --------------------------------------------------------------------------------------------


def _hflm_class():
    from lm_eval.models.huggingface import HFLM

    return HFLM


def make_policy_lm(policy: Any, batch_size: int = 8, max_length: int | None = None,
                   generate_batch_size: int | None = None) -> Any:
    """An lm-eval ``HFLM`` on ``policy.model`` whose requests run inside ``policy.active()``.

    ``generate_batch_size`` (default ``batch_size``) batches ``generate_until`` requests: a batch
    decodes until its last row stops (HumanEval: up to 1,024 tokens), so fewer, wider batches
    cost less (measured by scripts/bench_capability.py: 20 HumanEval documents 296 s at 8 per
    batch, 247 s in one batch, on 2 CPU cores). Log-likelihood batches stay at
    ``batch_size``: HFLM materialises full-vocabulary log-probabilities for every position.

    ``calls`` counts requests per path (``loglikelihood`` / ``generate_until:model`` /
    ``generate_until:decoder`` ...) so a result can say how it was scored.
    """
    HFLM = _hflm_class()

    class PolicyLM(HFLM):
        def __init__(self) -> None:
            super().__init__(pretrained=policy.model, tokenizer=policy.tokenizer,
                             batch_size=batch_size, max_length=max_length)
            self.policy = policy
            self.calls: dict[str, int] = {}
            self.generate_batch_size = int(generate_batch_size or batch_size)

        def _count(self, what: str, n: int) -> None:
            self.calls[what] = self.calls.get(what, 0) + n

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self._count("loglikelihood:model", len(requests))
            with self.policy.active():
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            self._count("loglikelihood_rolling:model", len(requests))
            with self.policy.active():
                return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

        def generate_until(self, requests, disable_tqdm: bool = False):
            if self.policy.decoder is None:
                self._count("generate_until:model", len(requests))
                with self.policy.active(), self._batching(self.generate_batch_size):
                    return super().generate_until(requests, disable_tqdm=disable_tqdm)
            self._count("generate_until:decoder", len(requests))
            return self._decoder_generate(requests)

        @contextlib.contextmanager
        def _batching(self, size: int) -> Iterator[None]:
            saved, self.batch_size_per_gpu = self.batch_size_per_gpu, size
            try:
                yield
            finally:
                self.batch_size_per_gpu = saved

        def _decoder_generate(self, requests) -> list[str]:
            """Answer generate_until through ``policy.generate`` (the decoder), grouped by
            generation settings; lm-eval's stop strings cut the returned text."""
            from lm_eval.models.utils import normalize_gen_kwargs, postprocess_generated_text

            from safesteer_bench.modeling.generation import GenConfig

            out: list[str | None] = [None] * len(requests)
            groups: dict[str, list[int]] = {}
            for i, req in enumerate(requests):
                groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
            for idx in groups.values():
                kwargs = normalize_gen_kwargs(dict(requests[idx[0]].args[1]), self.max_gen_toks)
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                cfg = GenConfig(max_new_tokens=int(kwargs["max_gen_toks"]),
                                temperature=float(kwargs.get("temperature") or 0.0)
                                if kwargs.get("do_sample") else 0.0,
                                top_p=float(kwargs.get("top_p") or 1.0),
                                batch_size=self.generate_batch_size, stop_strings=tuple(until))
                completions = self.policy.generate([requests[i].args[0] for i in idx], cfg, False)
                for i, c in zip(idx, completions):
                    text = postprocess_generated_text(c.text, until, None)
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
            return [o if o is not None else "" for o in out]

    return PolicyLM()


def response_cache_path(policy: Any, cache: Path | None = None) -> Path:
    """lm-eval ``use_cache`` prefix for ``policy`` (lm-eval appends ``_rank0.db``): one sqlite
    file per policy fingerprint, never per model name."""
    root = Path(cache) if cache is not None else cache_dir()
    return root / "lmeval" / "responses" / str(policy.fingerprint)


# --------------------------------------------------------------------------------------------
# Running benchmarks
# --------------------------------------------------------------------------------------------


_METRIC_NAMES = {"pass_at_k": "pass@1"}  # our HumanEval metric function reports k=1


def _metric_entries(task_result: dict[str, Any], n: int | None,
                    samples: Sequence[dict[str, Any]] = ()) -> dict[str, dict[str, Any]]:
    """lm-eval's ``{"acc,none": v, "acc_stderr,none": s, ...}`` -> ``{"acc": {value, stderr,
    n, direction}}``; the filter name is kept (``exact_match,strict-match``) unless it is
    ``none`` or the task's only filter.

    Where lm-eval has no stderr ("N/A": a group whose subtasks hold one document each, as MMLU
    at a small limit), it is the standard error of the mean over the per-document ``samples``
    (what lm-eval reports for a single task), if they carry the metric.
    """
    pairs = [k.split(",", 1) for k in task_result if "," in k and "_stderr," not in k]
    filters = {f for _, f in pairs}
    out = {}
    for metric, flt in pairs:
        value = task_result[f"{metric},{flt}"]
        if not isinstance(value, (int, float)):
            continue
        stderr = task_result.get(f"{metric}_stderr,{flt}")
        if not isinstance(stderr, (int, float)):
            stderr = _sample_stderr([r.get(metric) for r in samples if r.get("filter") == flt])
        name = _METRIC_NAMES.get(metric, metric)
        name = name if flt == "none" or len(filters) == 1 else f"{name},{flt}"
        out[name] = {"value": float(value),
                     "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                     "n": n, "direction": HIGHER}
    return out


def _sample_stderr(values: list[Any]) -> float | None:
    xs = [float(v) for v in values if isinstance(v, (int, float))]  # bool is an int
    if len(xs) < 2 or len(xs) != len(values):
        return None
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return (var / len(xs)) ** 0.5


def _subtasks(results: dict[str, Any], task: str) -> list[str]:
    subs = results.get("group_subtasks", {}).get(task)
    if not subs:
        return [task]
    return [leaf for s in subs for leaf in _subtasks(results, s)]


def _write_outputs(raw: dict[str, Any], out: Path) -> None:
    from lm_eval.utils import handle_non_serializable

    out.mkdir(parents=True, exist_ok=True)
    samples = raw.pop("samples", {}) or {}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(raw, indent=2, default=handle_non_serializable, ensure_ascii=False),
                   encoding="utf-8")
    os.replace(tmp, out / "results.json")
    for task, rows in samples.items():
        with open(out / f"samples_{task}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=handle_non_serializable, ensure_ascii=False) + "\n")
    raw["samples"] = samples


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Local tasks never need the hub: make datasets/hub say so instead of trying the network."""
    saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def local_task(task: str) -> LocalTask | None:
    """The local task ``task`` belongs to (MMLU subjects and categories belong to ssb_mmlu)."""
    if task in LOCAL_TASKS:
        return LOCAL_TASKS[task]
    if task.startswith("ssb_mmlu_"):
        return LOCAL_TASKS["ssb_mmlu"]
    return None


def is_generation_task(task: str | None) -> bool:
    """Whether ``task`` is one of the local generate_until tasks (GSM8K, HumanEval, IFEval)."""
    lt = local_task(task) if task else None
    return lt is not None and lt.output_type == "generate_until"


def task_limit(task: str, limit: int | None) -> int | None:
    """lm-eval's per-task ``limit`` for a benchmark ``limit``: a group spreads it over its
    subtasks (ceil), so MMLU at limit 20 scores 57 questions (1 per subject), not 57 × 20."""
    if limit is None:
        return None
    sub = task.removeprefix("ssb_mmlu_") if task.startswith("ssb_mmlu") else None
    if task == "ssb_mmlu":
        count = len(MMLU_SUBJECTS)
    elif sub is not None and sub in set(MMLU_SUBJECTS.values()):
        count = sum(c == sub for c in MMLU_SUBJECTS.values())
    else:
        count = 1
    return max(1, -(-limit // count))


@dataclass(frozen=True)
class _EntryBase:
    """The fields every :func:`run_capability` entry starts with (run or skipped), in their JSON order."""

    lm_eval_task: str
    limit: int | None
    limit_per_task: int | None
    lm_eval_equivalent: str


@dataclass(frozen=True)
class _PlannedTask:
    """One capability benchmark to run: its spec, its local task (None for lm-eval's own) and base fields."""

    spec: Any
    local: LocalTask | None
    base: _EntryBase


@dataclass(frozen=True)
class _CapabilityPlan:
    """Which benchmarks run, and the entries of those skipped (by name, in benchmark order)."""

    runs: list[_PlannedTask]
    skipped: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class _Harness:
    """What every task of one :func:`run_capability` call is evaluated with."""

    evaluate: Callable[..., dict[str, Any]]  # lm_eval.simple_evaluate
    task_manager: Any
    lm: Any
    cache_prefix: str | None  # lm-eval's response cache; None = off
    output_dir: Path
    allow_code_execution: bool
    seed: int
    num_fewshot: int | None
    bootstrap_iters: int


@dataclass(frozen=True)
class _TaskOutcome:
    """lm-eval's raw result of one task (samples written out), its wall time and the requests it made."""

    raw: dict[str, Any]
    seconds: float
    used: dict[str, int]  # policy LM calls during this task, by request type (0 when cached)


def _entry_base(spec: Any, limit: int | None, generate_limit: int | None,
                limits: Mapping[str, int] | None) -> _EntryBase:
    """The task, document limits and lm-eval equivalent of one capability benchmark."""
    if spec.kind != "capability" or not spec.task:
        raise ValueError(f"benchmark {spec.name} is not a capability benchmark with a task")
    lt = local_task(spec.task)
    docs = generate_limit if generate_limit is not None and is_generation_task(spec.task) else limit
    docs = (limits or {}).get(spec.name, docs)
    return _EntryBase(spec.task, docs, task_limit(spec.task, docs),
                      spec.task.replace("ssb_", "", 1) if lt else spec.task)


def _skip_reason(lt: LocalTask | None, allow_code_execution: bool) -> str | None:
    """Why a local task cannot run here (with the fix), or None when it can."""
    if lt is not None and lt.runs_code and not allow_code_execution:
        return f"not run: HumanEval executes model-written code; {OPT_IN_FIX}"
    if lt is not None and lt.name == "ssb_ifeval" and (missing := ifeval_missing()):
        return ("not run: lm-eval's IFEval needs " + ", ".join(missing) + "; install them "
                "(pip install langdetect immutabledict; python -m nltk.downloader punkt_tab)")
    return None


def _plan_capability(benchmarks: Sequence[Any], limit: int | None, generate_limit: int | None,
                     limits: Mapping[str, int] | None, allow_code_execution: bool) -> _CapabilityPlan:
    """Split ``benchmarks`` into the tasks to run and the skipped ones (logged, with their reason)."""
    runs: list[_PlannedTask] = []
    skipped: dict[str, dict[str, Any]] = {}
    for spec in benchmarks:
        base = _entry_base(spec, limit, generate_limit, limits)
        lt = local_task(spec.task)
        skip = _skip_reason(lt, allow_code_execution)
        if skip:
            log.warning("%s %s", spec.name, skip)
            skipped[spec.name] = {**asdict(base), "skipped": skip}
        else:
            runs.append(_PlannedTask(spec, lt, base))
    return _CapabilityPlan(runs, skipped)


def _run_task(harness: _Harness, task: _PlannedTask) -> _TaskOutcome:
    """Evaluate one task with lm-eval and write its raw results and samples under ``output_dir/<name>``."""
    lm, spec, seed = harness.lm, task.spec, harness.seed
    before = dict(lm.calls)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(code_execution_allowed(harness.allow_code_execution))
        if task.local is not None:
            stack.enter_context(_offline_env())
        raw = harness.evaluate(
            model=lm, tasks=[spec.task], limit=task.base.limit_per_task,
            task_manager=harness.task_manager, use_cache=harness.cache_prefix, num_fewshot=harness.num_fewshot,
            log_samples=True, bootstrap_iters=harness.bootstrap_iters, random_seed=seed,
            numpy_random_seed=1234 + seed, torch_random_seed=1234 + seed,
            fewshot_random_seed=1234 + seed, confirm_run_unsafe_code=harness.allow_code_execution)
    seconds = time.perf_counter() - start
    _write_outputs(raw, harness.output_dir / spec.name)
    used = {k: lm.calls.get(k, 0) - before.get(k, 0) for k in lm.calls}
    return _TaskOutcome(raw, seconds, used)


def _result_entry(task: _PlannedTask, outcome: _TaskOutcome, policy: Any, output_dir: Path) -> dict[str, Any]:
    """The :func:`run_capability` entry of a task that ran: its metrics, then how it was scored."""
    raw, spec = outcome.raw, task.spec
    leaves = _subtasks(raw, spec.task)
    n = sum(int(raw.get("n-samples", {}).get(t, {}).get("effective", 0)) for t in leaves)
    leaf_samples = [r for t in leaves for r in (raw.get("samples") or {}).get(t, [])]
    metrics = _metric_entries(raw["results"][spec.task], n, leaf_samples)
    leaf_configs = [c for t, c in raw.get("configs", {}).items() if t in leaves]
    request_type = sorted({c.get("output_type") for c in leaf_configs} - {None})
    generates = "generate_until" in request_type
    shots = sorted({c.get("num_fewshot") for c in leaf_configs} - {None})
    primary = task.local.primary if task.local is not None else None
    return {
        **metrics, **asdict(task.base),
        # which path answered the task's requests: the decoder for generation tasks of a
        # policy with one, else the model (with the policy's hooks/adapter active)
        "scored_via": "decoder" if generates and policy.decoder is not None else "model",
        "request_type": "+".join(request_type) or None,
        "requests": {k: v for k, v in outcome.used.items() if v},  # empty when all were cached
        "num_fewshot": shots[0] if len(shots) == 1 else shots,
        "primary_metric": primary if primary in metrics else next(iter(metrics), None),
        "seconds": round(outcome.seconds, 2),
        "output_dir": str(output_dir / spec.name),
    }


def run_capability(policy: Any, benchmarks: Sequence[Any], limit: int | None,
                   data_dir: str | Path | None, output_dir: Path,
                   allow_code_execution: bool = False, seed: int = 0, *,
                   batch_size: int = 8, cache: Path | None = None, use_cache: bool = True,
                   num_fewshot: int | None = None, bootstrap_iters: int = 100_000,
                   generate_limit: int | None = None,
                   generate_batch_size: int | None = None,
                   limits: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """Score ``policy`` on capability ``benchmarks`` (specs with ``kind="capability"``) with lm-eval.

    Returns ``{benchmark: {metric: {"value", "stderr", "n", "direction"}, "scored_via",
    "request_type", "requests", "limit", "limit_per_task", "lm_eval_task",
    "lm_eval_equivalent", "num_fewshot", "primary_metric", "seconds", "output_dir"}}``
    (:func:`capability_metrics` picks out the metrics). A benchmark that was not run (HumanEval
    without ``allow_code_execution``; IFEval without its packages) has ``"skipped": <reason and
    fix>`` and no metrics. lm-eval's raw results and per-sample logs go to
    ``output_dir/<benchmark>/results.json`` and ``samples_<task>.jsonl``.

    ``limit``: documents per benchmark, as lm-eval's ``--limit`` (the first ``limit`` of the
    task) except that a group spreads it over its subtasks (:func:`task_limit`); None = all.
    ``generate_limit`` replaces ``limit`` for generation tasks (GSM8K, HumanEval, IFEval) when given;
    ``generate_batch_size`` batches their requests (default ``batch_size``, see :func:`make_policy_lm`).
    ``limits`` gives chosen benchmarks their own document count (the profile's interval sizing).
    ``seed`` offsets lm-eval's seeds (0 reproduces lm-eval's defaults); ``num_fewshot`` overrides
    the tasks' defaults as ``lm_eval --num_fewshot`` does (MMLU 5-shot: 5); ``cache`` is the
    cache root (default :func:`safesteer_bench.paths.cache_dir`); ``use_cache=False`` turns off
    the per-fingerprint response cache.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    output_dir = Path(output_dir)
    plan = _plan_capability(benchmarks, limit, generate_limit, limits, allow_code_execution)
    results: dict[str, dict[str, Any]] = dict(plan.skipped)
    if not plan.runs:
        return results

    local = sorted({t.local.name for t in plan.runs if t.local is not None})
    n_local = sum(t.local is not None for t in plan.runs)
    harness = _Harness(simple_evaluate,
                       TaskManager(include_path=str(prepare_tasks(local, data_dir, cache)),
                                   include_defaults=n_local < len(plan.runs)),
                       make_policy_lm(policy, batch_size=batch_size, generate_batch_size=generate_batch_size),
                       str(response_cache_path(policy, cache)) if use_cache else None,
                       output_dir, allow_code_execution, seed, num_fewshot, bootstrap_iters)
    for task in plan.runs:
        results[task.spec.name] = _result_entry(task, _run_task(harness, task), policy, output_dir)
    return results


def capability_metrics(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The metric items of one :func:`run_capability` entry (values that are metric dicts)."""
    return {k: v for k, v in entry.items() if isinstance(v, dict) and "value" in v}
