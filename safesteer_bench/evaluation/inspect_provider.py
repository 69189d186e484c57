"""An inspect-ai model provider that serves an in-process Policy (docs/architecture.md §2, §5).

Safety benchmarks run as inspect-ai Tasks; the model behind them is a :class:`~.policy.Policy`
(base model + method: adapter, hooks, custom decoder), which no inspect provider knows how to
load. This module registers the provider ``safesteer``:

* **Named by fingerprint.** ``register_policy(policy)`` returns the model name
  ``safesteer/<policy-name>-<policy-fingerprint>``. inspect keys its generate cache, its logs and
  its memoized ``get_model`` instances by model name, so two policies can never share cached
  answers (lm-eval keys by bare model name and does exactly that).
* **Greedy, fixed length.** Decoding settings come from the Task's ``GenerateConfig``:
  ``temperature`` unset or 0 means greedy, ``max_tokens`` is the benchmark's max new tokens
  (the runner sets both per benchmark); ``top_p`` and ``seed`` map onto :class:`GenConfig`.
* **Batched.** inspect calls ``generate`` once per sample, concurrently. Requests are queued
  and handed to ``policy.generate`` together — the engine sorts them by length and splits them
  into batches of ``batch_size`` exactly as the bare path does — when ``max_batch`` requests are
  waiting or when no new request arrived for ``batch_window`` seconds, one engine call at a
  time, on the event-loop thread (torch from a worker thread measured 15-30 % slower on 2 CPU
  cores; every request is queued by then anyway). Compare inspect's own ``hf`` provider, which
  drains a queue after 2 s of quiet and generates in a background thread.
* **Same outputs as the bare path.** A runner chunk (up to 64 prompts) is one engine call, so
  the engine sorts and batches exactly as ``policy.generate`` does: identical completions.

Model args (``get_model(name, **model_args)`` or ``-M`` on inspect's command line):
``batch_size`` (engine batch, default 16), ``max_batch`` (requests per engine call, default
64), ``batch_window`` (seconds of quiet before a partial batch runs, default 0.02).

A name that is not registered is tried as a finished run's method (``safesteer/runs/<run-id>/<method>``:
the method's stored policy, nothing trained), then as a model spec (``safesteer/smollm2-135m``,
``safesteer//path/to/model``): the model is loaded with :func:`.models.load_model` and served
as its ``base`` policy — handy for using a local model as a judge. Input must be one user
message (an optional system message is prepended to it): Policies generate from a prompt
string through the model's chat template.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safesteer_bench.modeling.generation import Completion, GenConfig
from safesteer_bench.interrupt import raise_if_interrupted
from safesteer_bench.modeling.policy import Policy

PROVIDER = "safesteer"
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_BATCH = 64
DEFAULT_BATCH_WINDOW = 0.02


@dataclass
class _Entry:
    """A registered policy and what happened to it (a failure is kept to re-raise it as is)."""

    policy: Policy
    failure: BaseException | None = None
    engine_calls: int = 0
    engine_seconds: float = 0.0


_REGISTRY: dict[str, _Entry] = {}
_LOCK = threading.Lock()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "policy"


def model_name(policy: Policy) -> str:
    """``safesteer/<name>-<fingerprint>``: the inspect model name of ``policy``."""
    return f"{PROVIDER}/{_slug(policy.name)}-{policy.fingerprint}"


def register_policy(policy: Policy) -> str:
    """Make ``policy`` reachable as an inspect model; returns its model name.

    Registering the same policy again is a no-op; a different Policy object with the same
    fingerprint replaces the old one (same fingerprint = same outputs, by definition).
    """
    _ensure_registered()
    name = model_name(policy)
    key = name.split("/", 1)[1]
    with _LOCK:
        entry = _REGISTRY.get(key)
        if entry is None or entry.policy is not policy:
            _REGISTRY[key] = _Entry(policy)
        else:
            entry.failure = None
    return name


def unregister_policy(policy: Policy) -> None:
    with _LOCK:
        _REGISTRY.pop(model_name(policy).split("/", 1)[1], None)


def entry(name: str) -> _Entry | None:
    """The registry entry of a model name (with or without the ``safesteer/`` prefix)."""
    key = name.split("/", 1)[1] if name.startswith(PROVIDER + "/") else name
    return _REGISTRY.get(key)


def take_failure(name: str) -> BaseException | None:
    """The exception a policy raised while inspect drove it (cleared once taken)."""
    e = entry(name)
    if e is None:
        return None
    failure, e.failure = e.failure, None
    return failure


def gen_config_from(config: Any, batch_size: int, default_max_tokens: int | None = None) -> GenConfig:
    """inspect ``GenerateConfig`` -> our ``GenConfig``; unset temperature means greedy."""
    max_tokens = config.max_tokens if config.max_tokens is not None else default_max_tokens
    return GenConfig(
        max_new_tokens=int(max_tokens) if max_tokens is not None else GenConfig.max_new_tokens,
        temperature=float(config.temperature or 0.0),
        top_p=float(config.top_p if config.top_p is not None else 1.0),
        seed=int(config.seed or 0),
        batch_size=batch_size,
    )


def prompt_from_messages(messages: list[Any]) -> str:
    """The prompt string of a one-turn chat: the user message, a system message prepended."""
    system = [m.text for m in messages if m.role == "system"]
    users = [m for m in messages if m.role == "user"]
    others = [m.role for m in messages if m.role not in ("system", "user")]
    if len(users) != 1 or others:
        roles = ", ".join(m.role for m in messages)
        raise ValueError(f"the {PROVIDER} provider serves one user message (got: {roles}); "
                         "multi-turn and tool use are not supported by Policy.generate")
    return "\n\n".join(system + [users[0].text])


# --------------------------------------------------------------------------------------------
# Request batching
# --------------------------------------------------------------------------------------------


@dataclass
class _Request:
    prompt: str
    cfg: GenConfig
    done: Any  # anyio.Event
    result: Completion | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    batch: int = 0


@dataclass
class Batcher:
    """Collects concurrent ``submit`` calls and runs them through ``policy.generate`` together.

    The first waiting request leads: it waits until ``max_batch`` requests are queued or no new
    one arrived for ``window`` seconds, runs the batch (one engine call at a time), and repeats
    until the queue is empty. Others just wait for their result.
    """

    entry: _Entry
    max_batch: int = DEFAULT_MAX_BATCH
    window: float = DEFAULT_BATCH_WINDOW
    pending: list[_Request] = field(default_factory=list)
    leading: bool = False
    calls: list[int] = field(default_factory=list)  # size of each engine call (tests, stats)
    # Run the engine on the event-loop thread (default) or in a worker thread. Measured on 2 CPU
    # cores: torch generation from a non-main thread is 15-30 % slower (a second OpenMP thread
    # team), and nothing needs the loop while a batch runs: every request is already queued.
    in_thread: bool = False
    _full: Any = None

    async def submit(self, prompt: str, cfg: GenConfig) -> _Request:
        import anyio

        request = _Request(prompt, cfg, anyio.Event())
        self.pending.append(request)
        if self._full is not None and len(self.pending) >= self.max_batch:
            self._full.set()
        if not self.leading:
            self.leading = True
            try:
                await self._lead()
            finally:
                self.leading = False
        await request.done.wait()
        return request

    async def _lead(self) -> None:
        import anyio

        while self.pending:
            while len(self.pending) < self.max_batch:
                seen = len(self.pending)
                self._full = anyio.Event()
                with anyio.move_on_after(self.window):
                    await self._full.wait()
                self._full = None
                if len(self.pending) == seen:
                    break  # quiet for a whole window: run what we have
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
            groups: dict[GenConfig, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.cfg, []).append(request)
            for cfg, group in groups.items():
                try:
                    await self._run(cfg, group)
                finally:
                    for request in group:
                        request.done.set()

    async def _run(self, cfg: GenConfig, group: list[_Request]) -> None:
        import anyio

        self.calls.append(len(group))
        prompts = [r.prompt for r in group]
        started = time.perf_counter()
        if self.in_thread:
            outcome = await anyio.to_thread.run_sync(self._generate, prompts, cfg)
        else:
            outcome = self._generate(prompts, cfg)
        seconds = time.perf_counter() - started
        self.entry.engine_calls += 1
        self.entry.engine_seconds += seconds
        if isinstance(outcome, BaseException):
            # Keep the original (a KeyboardInterrupt stays one) for the caller of eval() to
            # re-raise; inspect itself sees an ordinary error on each sample of the batch.
            if self.entry.failure is None:
                self.entry.failure = outcome
            for r in group:
                r.error = RuntimeError(f"policy generation failed: {outcome!r}")
            return
        for r, completion in zip(group, outcome):
            r.result, r.seconds, r.batch = completion, seconds, len(group)

    def _generate(self, prompts: list[str], cfg: GenConfig) -> list[Completion] | BaseException:
        try:
            return self.entry.policy.generate(prompts, cfg, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed back to the event loop, see _run
            return exc


# --------------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------------

_registered = False


def _ensure_registered() -> None:
    """Register the ``safesteer`` modelapi with inspect (imports inspect; done once, lazily)."""
    global _registered
    if _registered:
        return
    from inspect_ai.model import ChatCompletionChoice, ChatMessageAssistant, ModelAPI, ModelOutput, ModelUsage
    from inspect_ai.model import GenerateConfig, modelapi

    @modelapi(name=PROVIDER)
    class SafesteerAPI(ModelAPI):
        """inspect ModelAPI over a registered Policy (see the module docstring)."""

        def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                     config: GenerateConfig = GenerateConfig(), batch_size: int = DEFAULT_BATCH_SIZE,
                     max_batch: int = DEFAULT_MAX_BATCH, batch_window: float = DEFAULT_BATCH_WINDOW,
                     **model_args: Any) -> None:
            super().__init__(model_name=model_name, base_url=base_url, api_key=api_key,
                             api_key_vars=[], config=config)
            self.entry = entry(model_name) or _load_unregistered(model_name, model_args)
            self.batch_size = int(batch_size)
            self.batcher = Batcher(self.entry, max_batch=int(max_batch), window=float(batch_window))

        async def generate(self, input: list[Any], tools: list[Any], tool_choice: Any,
                           config: GenerateConfig) -> ModelOutput:
            if tools:
                raise ValueError(f"the {PROVIDER} provider does not support tools")
            cfg = gen_config_from(config, self.batch_size)
            request = await self.batcher.submit(prompt_from_messages(input), cfg)
            if request.error is not None:
                raise request.error
            c = request.result
            assert c is not None
            message = ChatMessageAssistant(content=c.text, model=self.model_name, source="generate")
            return ModelOutput(
                model=self.model_name,
                choices=[ChatCompletionChoice(message=message,
                                              stop_reason="stop" if c.finished else "max_tokens")],
                usage=ModelUsage(input_tokens=c.prompt_tokens, output_tokens=c.new_tokens,
                                 total_tokens=c.prompt_tokens + c.new_tokens),
                time=request.seconds,
                metadata={"finished": c.finished, "engine_batch": request.batch, "seconds": c.seconds},
            )

        def max_tokens(self) -> int | None:
            return GenConfig.max_new_tokens

        def max_connections(self) -> int:
            return self.batcher.max_batch

        def connection_key(self) -> str:
            return self.model_name

    _registered = True


def run_policy(name: str) -> Policy | None:
    """``<run dir>/<method>`` of a finished run as its policy (None when ``name`` is not that):
    the run's model with the method's stored artifact (adapter, hooks or decoder); nothing is
    trained or written."""
    from safesteer_bench.errors import UserError

    path = Path(name)
    if not (path.parent / "plan.json").is_file():
        return None
    from safesteer_bench.cli.evaluate import load_plan
    from safesteer_bench.methods.api import get_method
    from safesteer_bench.pipeline.runner import Runner
    from safesteer_bench.pipeline.store import read_json_dict

    plan = load_plan(path.parent)
    if path.name not in plan.config.methods:
        raise UserError(f"run {path.parent} has no method '{path.name}'",
                        f"use one of: {', '.join(f'{path.parent}/{m}' for m in plan.config.methods)}")
    runner = Runner(plan)
    artifact = read_json_dict(runner.dir / "methods" / path.name / "artifact.json")
    if artifact is None:
        raise UserError(f"{path.name} has no stored artifact in {path.parent}",
                        "finish the run first (re-run its `safesteer-bench run` command)")
    return get_method(path.name).policy(runner.context(path.name), artifact)


def _load_unregistered(name: str, model_args: dict[str, Any]) -> _Entry:
    """``safesteer/<model spec>`` that is not a registered policy: a finished run's method
    (``safesteer/runs/<run-id>/<method>``), else the model loaded as ``base``."""
    from safesteer_bench.errors import UserError
    from safesteer_bench.modeling.models import load_model, resolve_model
    from safesteer_bench.modeling.policy import fingerprint

    served = run_policy(name)
    if served is not None:
        with _LOCK:
            return _REGISTRY.setdefault(name, _Entry(served))
    try:
        spec = resolve_model(name)
    except UserError as exc:
        raise UserError(
            f"no policy is registered as {PROVIDER}/{name} and it is not a model spec either ({exc})",
            "safesteer/<name>-<fingerprint> models exist only inside the process that registered "
            "them (inspect_provider.register_policy); otherwise pass a model alias or path",
        ) from exc
    loaded = load_model(spec, model_args.get("device"), model_args.get("dtype"))
    policy = Policy("base", loaded.model, loaded.tokenizer, fingerprint(loaded.identity, "base"))
    with _LOCK:
        return _REGISTRY.setdefault(name, _Entry(policy))


# --------------------------------------------------------------------------------------------
# Running prompts as an inspect Task
# --------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """Completions of one inspect run, in prompt order, and where its log went."""

    completions: list[Completion]
    log_location: str | None
    seconds: float
    engine_calls: int


def run_task(policy: Policy, prompts: list[Any], cfg: GenConfig, *, task_name: str,
             log_dir: str | None, metadata: dict[str, Any] | None = None,
             scorer_judge: str | None = None, max_batch: int | None = None,
             batch_window: float = DEFAULT_BATCH_WINDOW) -> TaskResult:
    """Generate ``prompts`` (``data.Prompt`` objects or strings) as one inspect Task.

    Samples carry the prompt id, category and label; the Task's ``GenerateConfig`` fixes the
    decoding (greedy when ``cfg.temperature == 0``) and ``max_tokens``. With ``log_dir`` an
    ``.eval`` log is written there (``inspect view --log-dir DIR``); ``scorer_judge`` adds an
    informational scorer running that judge (the run's numbers come from the judge stage).
    A policy error is re-raised as the original exception (KeyboardInterrupt included).
    """
    from inspect_ai import Task, eval as inspect_eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.model import GenerateConfig, get_model
    from inspect_ai.solver import generate

    started = time.perf_counter()
    name = register_policy(policy)
    n = max(len(prompts), 1)
    max_batch = max_batch or n
    samples = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            samples.append(Sample(input=p, id=f"{task_name}-{i:05d}"))
        else:
            samples.append(Sample(input=p.text, id=p.id, metadata={
                "category": p.category, "label": p.label, "source": p.source}))
    gen = GenerateConfig(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         top_p=cfg.top_p, seed=cfg.seed, max_connections=max_batch)
    model = get_model(name, config=gen, memoize=False, batch_size=cfg.batch_size,
                      max_batch=max_batch, batch_window=batch_window)
    task = Task(dataset=MemoryDataset(samples, name=task_name), solver=generate(),
                scorer=judge_scorer(scorer_judge) if scorer_judge else None,
                config=gen, name=task_name,
                metadata={"policy": policy.name, "fingerprint": policy.fingerprint,
                          "gen_key": policy.key(cfg), **(metadata or {})})
    api_entry = entry(name)
    calls_before = api_entry.engine_calls if api_entry else 0
    # log_realtime=False: inspect's per-event sample buffer (for watching a running eval) costs
    # more than generating a smoke-size chunk; the .eval log is written either way.
    logs = inspect_eval(
        task, model=model, log_dir=log_dir, display="none", max_samples=max_batch,
        max_connections=max_batch, log_realtime=False, fail_on_error=True,
        score=bool(scorer_judge),
        # No control server: per chunk it binds a socket, and its uvicorn takes over SIGINT, so
        # a Ctrl-C waited for the whole batch to decode (see .interrupt).
        ctl_server=False,
    )
    failure = take_failure(name)
    if failure is not None:
        raise failure
    raise_if_interrupted()  # a Ctrl-C that inspect turned into a cancelled run
    if not logs:
        raise RuntimeError(f"inspect returned no log for {task_name} on {name}")
    log = logs[0]
    if log.status != "success" or log.samples is None:
        detail = log.error.message if log.error else log.status
        raise RuntimeError(f"inspect run of {task_name} on {name} failed: {detail}")
    by_id = {s.id: s for s in log.samples}
    completions = []
    for sample in samples:
        s = by_id.get(sample.id)
        if s is None or s.error is not None:
            raise RuntimeError(f"inspect sample {sample.id} of {task_name} failed: "
                               f"{s.error.message if s is not None and s.error else 'missing'}")
        usage = s.output.usage
        completions.append(Completion(
            prompt=str(sample.input), text=s.output.completion,
            prompt_tokens=usage.input_tokens if usage else 0,
            new_tokens=usage.output_tokens if usage else 0,
            finished=s.output.stop_reason == "stop",
            seconds=(s.output.metadata or {}).get("seconds"),
        ))
    calls = (api_entry.engine_calls - calls_before) if api_entry else 0
    return TaskResult(completions, getattr(log, "location", None), time.perf_counter() - started, calls)


def judge_scorer(judge_name: str):
    """An inspect scorer that runs one of our judges on each sample (for the .eval log only)."""
    from inspect_ai.scorer import Score, accuracy, scorer

    from safesteer_bench.evaluation.judges import get_judge

    @scorer(metrics=[accuracy()], name=f"safesteer_{_slug(judge_name)}")
    def _scorer():
        judge = get_judge(judge_name)

        async def score(state, target):
            import anyio

            prompt = state.input_text
            verdict = (await anyio.to_thread.run_sync(judge.judge, [prompt], [state.output.completion]))[0]
            return Score(value=1 if verdict.refused else 0, answer=verdict.label,
                         explanation=verdict.rationale,
                         metadata={"judge": judge.name, "harmful": verdict.harmful,
                                   "parse_error": verdict.parse_error, "score": verdict.score})

        return score

    return _scorer()
