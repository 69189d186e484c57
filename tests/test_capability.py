"""Capability suites through lm-eval (safesteer_bench.evaluation.capability): local task YAMLs, the Policy
adapter (hooks active during requests, decoder path), the per-fingerprint response cache, the
HumanEval opt-in, and (real model) equality with lm-eval run directly on the same model."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from safesteer_bench.evaluation import capability as cap  # noqa: E402
from safesteer_bench.evaluation.benchmark import BENCHMARKS, SUITES, BenchmarkSpec  # noqa: E402
from safesteer_bench.errors import UserError  # noqa: E402
from safesteer_bench.modeling.generation import Completion  # noqa: E402
from safesteer_bench.modeling.hooks import ResidualHook, hook_count  # noqa: E402
from safesteer_bench.modeling.policy import Policy  # noqa: E402

import safesteer_bench.benchmarks  # noqa: E402,F401  (registers the specs)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache root for the module: prepared data and task folders are built once."""
    return tmp_path_factory.mktemp("ssb-cache")


@pytest.fixture(scope="module")
def tasks_dir(data_dir, cache) -> Path:
    return cap.prepare_tasks(None, data_dir, cache)


def _task_manager(path: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(path), include_defaults=False)


# ---------------------------------------------------------------------------------------------
# Specs and suites
# ---------------------------------------------------------------------------------------------


def test_capability_specs_and_suites():
    from safesteer_bench.benchmarks.capability import capability_suite

    assert SUITES["capability-5"] == ["mmlu", "arc-challenge", "gsm8k", "truthfulqa-mc2",
                                      "humaneval"]
    assert capability_suite("smoke") == SUITES["capability-5"] + ["arc-easy"]
    assert capability_suite("quick")[-1] == "arc-easy"
    assert "arc-easy" not in capability_suite("paper")
    for name in SUITES["capability-5"] + ["arc-easy", "ifeval"]:
        spec = BENCHMARKS.get(name)
        assert spec.kind == "capability" and spec.task in cap.LOCAL_TASKS


def test_task_limit_spreads_over_mmlu_subjects():
    assert cap.task_limit("ssb_mmlu", 20) == 1
    assert cap.task_limit("ssb_mmlu", 100) == 2
    assert cap.task_limit("ssb_mmlu_anatomy", 5) == 5
    assert cap.task_limit("ssb_arc_easy", 20) == 20
    assert cap.task_limit("ssb_mmlu", None) is None


# ---------------------------------------------------------------------------------------------
# Local task YAMLs and data preparation
# ---------------------------------------------------------------------------------------------


def test_task_folder_renders_every_task(tasks_dir):
    names = {p.stem for p in tasks_dir.glob("*.yaml")}
    assert {"ssb_arc_easy", "ssb_arc_challenge", "ssb_gsm8k", "ssb_truthfulqa_mc2",
            "ssb_humaneval", "ssb_ifeval", "ssb_mmlu"} <= names
    assert sum(n.startswith("ssb_mmlu_") and n.removeprefix("ssb_mmlu_") in cap.MMLU_SUBJECTS
               for n in names) == 57
    assert "${" not in (tasks_dir / "ssb_arc_easy.yaml").read_text()  # placeholders all filled
    tm = _task_manager(tasks_dir)
    assert {"ssb_arc_easy", "ssb_gsm8k", "ssb_mmlu_anatomy"} <= set(tm.all_tasks)


def test_tasks_load_with_expected_docs(tasks_dir, data_dir):
    tm = _task_manager(tasks_dir)
    loaded = tm.load(["ssb_arc_easy", "ssb_truthfulqa_mc2", "ssb_mmlu_abstract_algebra",
                      "ssb_gsm8k", "ssb_humaneval"])["tasks"]
    arc = loaded["ssb_arc_easy"]
    docs = list(arc.test_docs())
    assert len(docs) == 2376
    first = json.loads((data_dir / "arc" / "ARC-Easy-Test.jsonl").read_text().splitlines()[0])
    assert arc.doc_to_text(docs[0]) == f"Question: {first['question']['stem']}\nAnswer:"
    assert arc.doc_to_choice(docs[0]) == [c["text"] for c in first["question"]["choices"]]
    tqa = list(loaded["ssb_truthfulqa_mc2"].validation_docs())
    assert len(tqa) == 817
    assert tqa[0]["mc2_targets"]["labels"][:1] == [1]
    mmlu = loaded["ssb_mmlu_abstract_algebra"]
    mdocs = list(mmlu.test_docs())
    assert len(mdocs) == 100
    # lm-eval's mmlu prompt; the numeric-looking choices are kept verbatim as strings
    assert mmlu.doc_to_text(mdocs[0]).endswith("\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert mmlu.doc_to_target(mdocs[0]) == 1
    assert len(list(loaded["ssb_gsm8k"].test_docs())) == 1319
    assert len(list(loaded["ssb_humaneval"].test_docs())) == 164


def test_mmlu_csv_values_kept_verbatim(tmp_path):
    csv = tmp_path / "x_test.csv"
    csv.write_text('question,choice0,choice1,choice2,choice3,answer\n'
                   'q?,0.50,NaN,None,"1,000",3\n', encoding="utf-8")
    rows = cap._mmlu_rows(csv, "x")
    assert rows == [{"question": "q?", "subject": "x", "choices": ["0.50", "NaN", "None", "1,000"],
                     "answer": 3}]
    csv.write_text("question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,B\n")
    with pytest.raises(UserError, match="line 2"):
        cap._mmlu_rows(csv, "x")


def test_data_dir_is_resolved_at_run_time(data_dir, tmp_path, monkeypatch):
    """The YAMLs point at what data.resolve finds: --data-dir, then $SAFESTEER_BENCH_DATA."""
    mine = tmp_path / "mydata"
    (mine / "arc").mkdir(parents=True)
    lines = (data_dir / "arc" / "ARC-Easy-Test.jsonl").read_text().splitlines()[:3]
    (mine / "arc" / "ARC-Easy-Test.jsonl").write_text("\n".join(lines) + "\n")
    folder = cap.prepare_tasks(["ssb_arc_easy"], mine, tmp_path / "cache")
    tm = _task_manager(folder)
    assert len(list(tm.load(["ssb_arc_easy"])["tasks"]["ssb_arc_easy"].test_docs())) == 3
    monkeypatch.setenv("SAFESTEER_BENCH_DATA", str(mine))
    assert cap.prepare_tasks(["ssb_arc_easy"], None, tmp_path / "cache") == folder
    monkeypatch.setenv("SAFESTEER_BENCH_CACHE", str(tmp_path / "nocache"))
    monkeypatch.setenv("SAFESTEER_BENCH_OFFLINE", "1")
    with pytest.raises(UserError, match="ARC-Challenge-Test.jsonl"):
        cap.prepare_tasks(["ssb_arc_challenge"], mine, tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# The Policy adapter
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountingHook(ResidualHook):
    """A steering hook that adds nothing and counts the forward passes it sees."""

    calls: list = field(default_factory=list, compare=False)

    def apply(self, hidden):
        self.calls.append(tuple(hidden.shape))
        return hidden


def _spec(task: str, name: str | None = None) -> BenchmarkSpec:
    return BenchmarkSpec(name=name or task, kind="capability", description="test", task=task)


def test_hooks_are_active_during_every_request(tiny, data_dir, cache, tmp_path):
    import torch

    model, tok = tiny
    hook = CountingHook(layer=1, direction=torch.zeros(model.config.hidden_size))
    policy = Policy("hooked", model, tok, "fp-hooked", hooks=(hook,))
    out = cap.run_capability(policy, [BENCHMARKS.get("arc-easy")], 3, data_dir, tmp_path,
                             cache=cache, use_cache=False)
    entry = out["arc-easy"]
    assert hook.calls, "the policy's hook never saw a forward pass"
    assert entry["requests"] == {"loglikelihood:model": sum(
        len(json.loads(line)["arguments"]) for line in
        (tmp_path / "arc-easy" / "samples_ssb_arc_easy.jsonl").read_text().splitlines())}
    assert hook_count(model) == 0  # removed after the requests
    assert entry["scored_via"] == "model" and entry["request_type"] == "multiple_choice"
    metrics = cap.capability_metrics(entry)
    assert set(metrics) == {"acc", "acc_norm"} and entry["primary_metric"] == "acc_norm"
    for m in metrics.values():
        assert m["n"] == 3 and m["direction"] == "higher is better" and m["stderr"] is not None
    assert (tmp_path / "arc-easy" / "results.json").is_file()


def test_steering_hook_changes_scores(tiny, data_dir, cache, tmp_path):
    """The hook really reaches lm-eval's forward passes: a large steering vector moves the
    log-likelihoods lm-eval records."""
    import torch

    model, tok = tiny
    plain = Policy("plain", model, tok, "fp-plain")
    steer = Policy("steer", model, tok, "fp-steer",
                   hooks=(ResidualHook(layer=1, direction=torch.ones(model.config.hidden_size),
                                       coef=50.0),))

    def lls(policy, sub):
        cap.run_capability(policy, [BENCHMARKS.get("arc-easy")], 2, data_dir, tmp_path / sub,
                           cache=cache, use_cache=False)
        rows = (tmp_path / sub / "arc-easy" / "samples_ssb_arc_easy.jsonl").read_text()
        return [json.loads(r)["resps"] for r in rows.splitlines()]

    assert lls(plain, "a") != lls(steer, "b")


def test_response_cache_is_keyed_by_fingerprint(tiny, data_dir, cache, tmp_path):
    model, tok = tiny
    a = Policy("a", model, tok, "fp-aaaa")
    b = Policy("b", model, tok, "fp-bbbb")
    assert cap.response_cache_path(a, cache) != cap.response_cache_path(b, cache)
    assert cap.response_cache_path(a, cache).name == "fp-aaaa"
    assert "tiny" not in str(cap.response_cache_path(a, cache))
    spec = [BENCHMARKS.get("arc-easy")]
    first = cap.run_capability(a, spec, 2, data_dir, tmp_path / "1", cache=cache)["arc-easy"]
    assert Path(str(cap.response_cache_path(a, cache)) + "_rank0.db").is_file()
    again = cap.run_capability(a, spec, 2, data_dir, tmp_path / "2", cache=cache)["arc-easy"]
    assert again["requests"] == {}  # all answered from a's cache
    assert again["acc"]["value"] == first["acc"]["value"]
    other = cap.run_capability(b, spec, 2, data_dir, tmp_path / "3", cache=cache)["arc-easy"]
    assert other["requests"]["loglikelihood:model"] > 0  # b never reads a's answers
    assert Path(str(cap.response_cache_path(b, cache)) + "_rank0.db").is_file()


def test_decoder_policy_generates_through_its_decoder(tiny, data_dir, cache, tmp_path):
    model, tok = tiny
    seen: list[tuple[list[str], int]] = []

    def decoder(prompts, cfg, progress):
        seen.append((list(prompts), cfg.max_new_tokens))
        text = "She makes 9 * 2 = 18.\n#### 18\n\nQuestion: and then?"
        return [Completion(p, text, 0, 0, True) for p in prompts]

    policy = Policy("beam", model, tok, "fp-beam", decoder=decoder)
    out = cap.run_capability(policy, [BENCHMARKS.get("gsm8k"), BENCHMARKS.get("arc-easy")], 2,
                             data_dir, tmp_path, cache=cache, use_cache=False)
    gsm = out["gsm8k"]
    assert gsm["scored_via"] == "decoder" and gsm["requests"] == {"generate_until:decoder": 2}
    assert seen and seen[0][1] == 256 and seen[0][0][0].endswith("Answer:")
    assert gsm["num_fewshot"] == 5
    # "#### 18" is right for the first question (Janet's ducks) and wrong for the second
    assert gsm["exact_match,strict-match"]["value"] == 0.5
    rows = [json.loads(r) for r in
            (tmp_path / "gsm8k" / "samples_ssb_gsm8k.jsonl").read_text().splitlines()]
    assert rows[0]["resps"][0][0] == "She makes 9 * 2 = 18.\n#### 18\n\n"  # cut at "Question:"
    # log-likelihood tasks still go through the model
    assert out["arc-easy"]["scored_via"] == "model"
    assert "loglikelihood:model" in out["arc-easy"]["requests"]


# ---------------------------------------------------------------------------------------------
# HumanEval: code runs only with the opt-in, in a subprocess with a timeout
# ---------------------------------------------------------------------------------------------


def test_humaneval_is_skipped_without_opt_in(tiny, data_dir, cache, tmp_path):
    model, tok = tiny
    policy = Policy("p", model, tok, "fp-p")
    out = cap.run_capability(policy, [BENCHMARKS.get("humaneval")], 2, data_dir, tmp_path,
                             cache=cache)
    entry = out["humaneval"]
    assert "--allow-code-execution" in entry["skipped"]
    assert cap.capability_metrics(entry) == {}
    assert not (tmp_path / "humaneval").exists()  # nothing was generated or executed


def test_generation_tasks_get_their_own_limit(tiny, data_dir, cache, tmp_path):
    """``generate_limit`` caps generation tasks only; multiple-choice tasks keep ``limit``."""
    model, tok = tiny
    policy = Policy("p", model, tok, "fp-p")
    specs = [BENCHMARKS.get("humaneval"), BENCHMARKS.get("ifeval")]
    out = cap.run_capability(policy, specs, 100, data_dir, tmp_path, cache=cache, generate_limit=20)
    assert [out[n]["limit"] for n in ("humaneval", "ifeval")] == [20, 20]  # both skipped, before any work
    assert cap.task_limit("ssb_mmlu", 100) == 2


def test_plan_caps_generation_tasks_unless_the_limit_is_explicit():
    from safesteer_bench.pipeline.runner import RunConfig, make_plan

    def plan(**kw):
        return make_plan(RunConfig(methods=["base"], model="smollm2-135m", benchmarks="capability-5",
                                   profile="quick", **kw))

    assert (plan().capability_limit, plan().capability_generate_limit) == (50, 10)
    assert (plan(capability_limit=7).capability_limit, plan(capability_limit=7).capability_generate_limit) == (7, 7)
    assert plan(capability_limit=7, capability_generate_limit=3).capability_generate_limit == 3


def test_quick_sizes_the_scored_multiple_choice_tasks_for_three_point_intervals():
    from safesteer_bench.profiles import get_profile
    from safesteer_bench.pipeline.runner import RunConfig, describe_plan, make_plan

    plan = make_plan(RunConfig(methods=["base"], model="smollm2-135m", benchmarks="capability-5", profile="quick"))
    # 1.96 * sqrt(0.25 / 1068) = 0.02999: any accuracy's 95 % interval is at most +-3 points
    assert plan.capability_sized == {"arc-easy": 1068}
    assert 1.959964 * (0.25 / 1068) ** 0.5 <= 0.03 < 1.959964 * (0.25 / 1067) ** 0.5
    assert "arc-easy 1068" in describe_plan(plan)
    # tasks left out of the small score (chance-level, generation, too costly) keep the plain limit
    assert get_profile("smoke").sized_documents() is None
    smoke = make_plan(RunConfig(methods=["base"], model="smollm2-135m", benchmarks="capability-5", profile="smoke"))
    assert smoke.capability_sized == {}
    assert make_plan(RunConfig(methods=["base"], model="smollm2-135m", benchmarks="capability-5",
                               profile="quick", capability_limit=30)).capability_sized == {}


def test_code_execution_refused_without_opt_in(monkeypatch):
    monkeypatch.delenv(cap.CODE_EXECUTION_ENV, raising=False)
    with pytest.raises(UserError, match="allow-code-execution"):
        cap.run_program("print(1)")
    with pytest.raises(UserError):
        cap.pass_at_k(["assert True"], [["x = 1"]], [1])


def test_pass_at_k_runs_programs_in_a_subprocess(data_dir, tmp_path):
    import gzip

    with gzip.open(data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        doc = json.loads(f.readline())
    test = f"{doc['test']}\ncheck({doc['entry_point']})"
    right = doc["prompt"] + doc["canonical_solution"]
    wrong = doc["prompt"] + "    return not True\n"
    with cap.code_execution_allowed():
        assert cap.pass_at_k([test], [[right]], [1]) == 1.0
        assert cap.pass_at_k([test], [[wrong]], [1]) == 0.0
        assert cap.run_program("import os; os.getcwd()")
        assert not cap.run_program("while True: pass", timeout=1.0)
        marker = tmp_path / "escaped"
        assert cap.run_program(f"open({str(marker)!r}, 'w').write('x')")  # not a sandbox:
        assert marker.exists()  # a subprocess with a timeout, as DESIGN says; hence the opt-in
    assert cap._pass_at_k_estimate(5, 1, 1) == pytest.approx(0.2)
    assert cap._pass_at_k_estimate(5, 5, 1) == 1.0


def test_ifeval_is_skipped_with_the_reason_when_its_packages_are_missing(tiny, data_dir, cache,
                                                                        tmp_path):
    missing = cap.ifeval_missing()
    if not missing:
        pytest.skip("IFEval's dependencies are installed here")
    model, tok = tiny
    out = cap.run_capability(Policy("p", model, tok, "fp-p"), [BENCHMARKS.get("ifeval")], 2,
                             data_dir, tmp_path, cache=cache)
    assert all(m in out["ifeval"]["skipped"] for m in missing)


def test_metric_entries_naming():
    raw = {"alias": "x", "exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.1,
           "exact_match,flexible-extract": 0.25, "exact_match_stderr,flexible-extract": "N/A"}
    got = cap._metric_entries(raw, 4)
    assert got["exact_match,strict-match"] == {"value": 0.5, "stderr": 0.1, "n": 4,
                                               "direction": "higher is better"}
    assert got["exact_match,flexible-extract"]["stderr"] is None
    single = cap._metric_entries({"pass_at_k,create_test": 0.0,
                                  "pass_at_k_stderr,create_test": 0.0}, 2)
    assert list(single) == ["pass@1"]
    # a group without lm-eval stderr (one document per subtask): from the samples
    group = cap._metric_entries({"acc,none": 0.5, "acc_stderr,none": "N/A"}, 4,
                                [{"filter": "none", "acc": v} for v in (1.0, 0.0, 1.0, 0.0)])
    assert group["acc"]["stderr"] == pytest.approx((1 / 3 / 4) ** 0.5)


# ---------------------------------------------------------------------------------------------
# Real model: our adapter changes nothing
# ---------------------------------------------------------------------------------------------


@pytest.mark.real
def test_adapter_equals_lm_eval_direct(smollm2, data_dir, cache, tmp_path):
    """On SmolLM2 at a fixed limit, run_capability gives exactly the accuracy (and the
    per-sample log-likelihoods) of lm-eval run directly on the same model object."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    model, tok = smollm2.model, smollm2.tokenizer
    policy = Policy("base", model, tok, "fp-smollm2-equality")
    specs = [BENCHMARKS.get("arc-easy"), _spec("ssb_mmlu_anatomy", "mmlu-anatomy"),
             _spec("ssb_mmlu_astronomy", "mmlu-astronomy")]
    limits = {"arc-easy": 8, "mmlu-anatomy": 5, "mmlu-astronomy": 5}
    ours = {}
    for spec in specs:
        ours.update(cap.run_capability(policy, [spec], limits[spec.name], data_dir, tmp_path / "ours",
                                       cache=cache, use_cache=False, batch_size=8))
    direct_lm = HFLM(pretrained=model, tokenizer=tok, batch_size=8)
    tm = _task_manager(cap.prepare_tasks(None, data_dir, cache))
    for spec in specs:
        direct = simple_evaluate(model=direct_lm, tasks=[spec.task], limit=limits[spec.name],
                                 task_manager=tm, log_samples=True)
        res = direct["results"][spec.task]
        for metric in cap.capability_metrics(ours[spec.name]):
            assert ours[spec.name][metric]["value"] == res[f"{metric},none"], (spec.name, metric)
        ours_rows = [json.loads(r)["resps"] for r in
                     (tmp_path / "ours" / spec.name / f"samples_{spec.task}.jsonl")
                     .read_text().splitlines()]
        direct_rows = json.loads(json.dumps([s["resps"] for s in direct["samples"][spec.task]]))
        assert ours_rows == direct_rows
        assert ours[spec.name]["acc"]["n"] == limits[spec.name]


def test_generation_requests_use_the_generation_batch_size(tiny, data_dir, cache, tmp_path):
    """GSM8K's 3 documents go in one batch of up to 64 rows, log-likelihood stays at 2 per batch."""
    model, tok = tiny
    policy = Policy("p", model, tok, "fp-gen-batch")
    lm = cap.make_policy_lm(policy, batch_size=2, generate_batch_size=64)
    rows: list[int] = []
    real = lm._model_generate

    def spy(context, *args, **kwargs):
        rows.append(context.shape[0])
        return real(context, *args, **kwargs)

    lm._model_generate = spy
    from lm_eval.api.instance import Instance

    reqs = [Instance("generate_until", {}, (f"Question {i}: 2+2?", {"until": ["\n"], "max_gen_toks": 3}), i)
            for i in range(3)]
    assert len(lm.generate_until(reqs, disable_tqdm=True)) == 3
    assert rows == [3] and lm.batch_size == 2  # one generation batch; the LL size is restored

    seen: list[int] = []
    beam = Policy("beam", model, tok, "fp-gen-batch-2",
                  decoder=lambda prompts, cfg, progress: seen.append(cfg.batch_size)
                  or [Completion(p, "4", 0, 0, True) for p in prompts])
    assert cap.make_policy_lm(beam, batch_size=2, generate_batch_size=64).generate_until(reqs, True) == ["4"] * 3
    assert seen == [64]
