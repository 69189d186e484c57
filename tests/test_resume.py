"""Kill-and-resume: SIGKILL a real `safesteer-bench run` mid-generation, re-run, lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import make_tiny_model, make_tiny_tokenizer


def _cmd(model_dir: Path, out: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "safesteer_bench", "run", "--methods", "base", "--model", str(model_dir),
            "--benchmarks", "advbench", "--limit", "60", "--profile", "smoke", "--out", str(out),
            "--data-dir", str(data_dir), "--run-id", "killme"]


def test_sigkill_mid_generation_then_resume(tmp_path, data_dir):
    model_dir = tmp_path / "tiny"
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(tokenizer, layers=6, hidden=64).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    env = {**os.environ, "SAFESTEER_BENCH_CHUNK": "4", "HF_HUB_OFFLINE": "1"}
    checkpoint = tmp_path / "runs" / "killme" / "samples" / "base" / "advbench.gen.jsonl"

    proc = subprocess.Popen(_cmd(model_dir, tmp_path / "runs", data_dir), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.exists() and len(checkpoint.read_text().splitlines()) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise --limit"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(l) for l in checkpoint.read_text().splitlines() if l.strip()]
    assert 8 <= len(before) < 60
    assert not (tmp_path / "runs" / "killme" / "results.json").exists()

    done = subprocess.run(_cmd(model_dir, tmp_path / "runs", data_dir), env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after = [json.loads(l) for l in checkpoint.read_text().splitlines() if l.strip()]
    # Finished chunks were kept verbatim, not regenerated: the file only grew.
    assert after[: len(before)] == before
    assert len({r["id"] for r in after}) == 60 == len(after)
    results = json.loads((tmp_path / "runs" / "killme" / "results.json").read_text())
    assert results["results"]["base"]["advbench"]["n"] == 60
    # The killed invocation's finished stages (its model load) reached timing.json before the kill.
    timing = json.loads((tmp_path / "runs" / "killme" / "timing.json").read_text())["invocations"]
    assert results["timing"]["invocations"] == 2 and [t["finished"] for t in timing] == [False, True]
    assert timing[0]["stages"].get("load", 0) > 0
