"""Benchmark data: registry of pinned files (split from the data module at its own seams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from safesteer_bench.errors import unknown_name



T = TypeVar("T")
ENV_DATA = "SAFESTEER_BENCH_DATA"
ENV_DATA_URL = "SAFESTEER_BENCH_DATA_URL"
ENV_OFFLINE = ("SAFESTEER_BENCH_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
RAW_BASE = "https://raw.githubusercontent.com"
DOWNLOAD_TIMEOUT_S = 60
PLACEHOLDER = "[INSERT PROMPT HERE]"


@dataclass(frozen=True)
class DataFile:
    """One pinned data file (or, for ``kind="dir"``, a folder of CSV files such as MMLU).

    ``rows`` follows the MANIFEST: data rows of a CSV (header excluded), records of a JSON list
    or JSONL file (gz: after decompression), non-empty lines of a TXT file; for a folder, the sum
    over its ``files`` CSVs. For a folder, ``sha256`` is the digest of the lines
    ``"<name>\\t<sha256 of file>\\n"`` over its ``*.csv`` files in sorted order, and ``url``
    names the source folder (folders are never downloaded).
    """

    key: str
    relpath: str
    url: str
    sha256: str
    rows: int
    description: str
    licence: str
    kind: str = "file"
    files: int = 1


def _gh(repo: str, commit: str, path: str) -> str:
    """The raw.githubusercontent URL of ``path`` in ``repo`` at ``commit`` (pinned, immutable)."""
    return f"{RAW_BASE}/{repo}/{commit}/{path}"


_RD = ("andyrdt/refusal_direction", "9d852fae1a9121c78b29142de733cb1340770cc3")
_XS = ("paul-rottger/exaggerated-safety", "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d")
_GF = ("sherdencooper/GPTFuzz", "1eddeb565740ae311b5f4950492b011a6f866fe7")
_TQA = ("koppula/TruthfulQA", "4dee2311b23de20b43bfc12ace7037f3f71ba421")
_ARC = ("RazvanDu/TemporalRNNs", "93811e3f9f8c5c1f63650153541cd6c626dafcc0")
_MMLU = ("HaeChan0305/MLILAB-FedLLM", "d92730e8bacd7b3a61e551e015e40588e10234b4")
_XS_LABELED_SHA = {
    "gpt4": "71af323af8ecdec0efae23992317721441d2cfedddedeef3248f842f4e15c9ca",
    "llama2new": "6365cc55ce0a593c7ab8785853d02784be027d97199d4077912b4313cd010099",
    "mistralinstruct": "6a146b65a5b96ec8249729bc2db459697175125998d7cbbcc88f7688ecf31dad",
}
XSTEST_LABELED_MODELS: tuple[str, ...] = tuple(_XS_LABELED_SHA)

_SAFETY_FILES = [
    DataFile("advbench", "advbench/harmful_behaviors.csv",
             _gh(*_RD, "dataset/raw/advbench.csv"),
             "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1", 520,
             "AdvBench harmful behaviors (goal, target)",
             "MIT (llm-attacks); copy in Apache-2.0 repo"),
    DataFile("harmbench", "harmbench/harmbench_behaviors_text_test.csv",
             _gh(*_RD, "dataset/raw/harmbench_test.csv"),
             "75d257b3e7428c52eb7b0154318f455af3e01b09a3794b5e2f3d36054f3c0e29", 320,
             "HarmBench text test behaviors (240 used: copyright rows excluded)", "MIT"),
    DataFile("strongreject", "strongreject/strongreject_dataset.csv",
             _gh(*_RD, "dataset/raw/strongreject.csv"),
             "4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381", 313,
             "StrongREJECT forbidden prompts", "not verified (copy in Apache-2.0 repo)"),
    DataFile("jailbreakbench-harmful", "jailbreakbench/harmful-behaviors.csv",
             _gh(*_RD, "dataset/raw/jailbreakbench.csv"),
             "45e9a8923b28f547bb372fbaa9af7df8b38c818a80ae50c3bab97704197ff516", 100,
             "JailbreakBench JBB-Behaviors, harmful", "MIT"),
    DataFile("jailbreakbench-benign", "jailbreakbench/benign-behaviors.csv",
             _gh("Baisayan/hack", "2b37da1c255e43e16a74ecd3e51c99ea992b5237",
                 "data/benign-behaviors.csv"),
             "c0958ac974fb6629527aeff6c81c88154a877190d07313ac377d36951fde5d3e", 100,
             "JailbreakBench JBB-Behaviors, benign (third-party copy, not a git snapshot)",
             "MIT (JailbreakBench)"),
    DataFile("maliciousinstruct", "maliciousinstruct/MaliciousInstruct.txt",
             _gh("Princeton-SysML/Jailbreak_LLM", "1e490531c0ef4bc13430178bf1fbc8f813e34b1a",
                 "data/MaliciousInstruct.txt"),
             "a64d69dd1004aac4a23aaff3748fb8f17161893f74db36f45b8bc849eb1bcce5", 100,
             "MaliciousInstruct, one instruction per line", "none stated"),
    DataFile("xstest", "xstest/xstest_prompts.csv", _gh(*_XS, "xstest_prompts.csv"),
             "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a", 450,
             "XSTest v2 prompts (250 safe, 200 unsafe)", "CC-BY-4.0"),
    *[
        DataFile(f"xstest-labeled-{model}",
                 f"xstest/labeled_completions/xstest_v2_completions_{model}.csv",
                 _gh(*_XS, f"model_completions/xstest_v2_completions_{model}.csv"), sha, 450,
                 f"XSTest completions by {model} with human 3-way labels", "CC-BY-4.0")
        for model, sha in _XS_LABELED_SHA.items()
    ],
    DataFile("gptfuzzer-templates", "gptfuzzer/GPTFuzzer.csv",
             _gh(*_GF, "datasets/prompts/GPTFuzzer.csv"),
             "e4abf25343b4adb991dd8ddc6189c038f26a6e74064d792cced69f56f71577fc", 77,
             f"GPTFuzzer jailbreak templates (each holds {PLACEHOLDER})", "MIT"),
    DataFile("gptfuzzer-questions", "gptfuzzer/question_list.csv",
             _gh(*_GF, "datasets/questions/question_list.csv"),
             "18531eb6bc1c8fc0b8f66822b366b872202b852bf28826cef590ad0d7a81c749", 100,
             "GPTFuzzer harmful questions (default training pool)", "MIT"),
    DataFile("gptfuzzer-labeled", "gptfuzzer/responses_labeled_train.csv",
             _gh(*_GF, "datasets/responses_labeled/train.csv"),
             "e25fe2a06d2085af260927164364524628c8b5c1dd1bab1b58ddbd917c3f7cb0", 6160,
             "GPTFuzzer responses labelled harmful (1) / not (0)", "MIT"),
    DataFile("tdc2023-dev", "tdc2023/tdc2023_dev_behaviors.json",
             _gh(*_RD, "dataset/raw/tdc2023_dev_behaviors.json"),
             "9392c63ad0193f0510f33812593f0dc71d13ae8b2ad93f64d670e9795deee1b0", 50,
             "TDC 2023 red-teaming behaviors, dev", "not verified"),
    DataFile("tdc2023-test", "tdc2023/tdc2023_test_behaviors.json",
             _gh(*_RD, "dataset/raw/tdc2023_test_behaviors.json"),
             "c4a630921005fd5e26dfe22dd720e411c8e7866c96f5b1a0ca2d46f0e1d1f8c2", 50,
             "TDC 2023 red-teaming behaviors, test", "not verified"),
    DataFile("alpaca", "alpaca/alpaca_instructions_no_input.json",
             _gh(*_RD, "dataset/processed/alpaca.json"),
             "c4ce1bdc5c9b92caabcb171c27c7ec1e79832836bae10291d7c8ab8c6245f600", 31323,
             "Alpaca instructions with empty input (harmless pool)", "CC-BY-NC-4.0"),
]

_CAPABILITY_FILES = [
    DataFile("gsm8k-test", "gsm8k/test.jsonl",
             _gh("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c",
                 "grade_school_math/data/test.jsonl"),
             "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14", 1319,
             "GSM8K test", "MIT"),
    DataFile("arc-challenge-test", "arc/ARC-Challenge-Test.jsonl",
             _gh(*_ARC, "ARC-Challenge/ARC-Challenge-Test.jsonl"),
             "9fa8ffb3e3a1f88cb302d53dd95aae81e39209ad9bcf974376b319d8fd35717c", 1172,
             "ARC-Challenge test", "CC-BY-SA-4.0 (AI2, not verified)"),
    DataFile("arc-easy-test", "arc/ARC-Easy-Test.jsonl",
             _gh(*_ARC, "ARC-Easy/ARC-Easy-Test.jsonl"),
             "ce32a0774b4beb1977d2c6b16dda5dd2b24fdc9c7f506882c452678676bd09be", 2376,
             "ARC-Easy test", "CC-BY-SA-4.0 (AI2, not verified)"),
    DataFile("truthfulqa-mc", "truthfulqa/v1/mc_task.json", _gh(*_TQA, "data/v1/mc_task.json"),
             "b3799639bc76c939836d587de7d30b48d91012cb34be04806d33106ce06c162a", 817,
             "TruthfulQA MC1/MC2 targets (original 817 questions)", "Apache-2.0"),
    DataFile("humaneval", "humaneval/HumanEval.jsonl.gz",
             _gh("openai/human-eval", "6d43fb980f9fee3c892a914eda09951f772ad10d",
                 "data/HumanEval.jsonl.gz"),
             "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef", 164,
             "HumanEval problems (gzip JSONL)", "MIT"),
    DataFile("ifeval", "ifeval/input_data.jsonl",
             _gh("microsoft/llm-steer-instruct", "4f84882e57d22897a28cad4ce7e1f8ab60b06dad",
                 "data/input_data.jsonl"),
             "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49", 541,
             "IFEval prompts", "Apache-2.0 (upstream, not verified)"),
    DataFile("mmlu-test", "mmlu/test", _gh(*_MMLU, "data/mmlu/test"),
             "f46f05ad36349e9a1d8b5d87f55cae3215235fab23e517b2fa4f1a1232e2abf3", 14042,
             "MMLU test, 57 subject CSVs (answer as index 0-3)", "MIT (not verified)",
             kind="dir", files=57),
    DataFile("mmlu-dev", "mmlu/dev", _gh(*_MMLU, "data/mmlu/dev"),
             "698171e2d731971acda823164184d6af5b60029fe4f03e1697e799cc98af4667", 285,
             "MMLU dev (5-shot exemplars), 57 subject CSVs", "MIT (not verified)",
             kind="dir", files=57),
]

DATA_FILES: dict[str, DataFile] = {f.key: f for f in _SAFETY_FILES + _CAPABILITY_FILES}


def get_file(key: str) -> DataFile:
    """The registered file ``key``; an unknown key is a one-line UserError listing the known."""
    if key not in DATA_FILES:
        raise unknown_name("data file", key, list(DATA_FILES), "data list")
    return DATA_FILES[key]
