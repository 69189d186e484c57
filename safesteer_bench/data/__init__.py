"""Benchmark data: where each file comes from, where it is found locally, and how it is read.

Modules: ``registry`` (the pinned files), ``resolve`` (local folders, cache, download),
``readers`` (CSV/JSON readers whose errors name file and line), ``records`` (``Prompt``,
``LabeledCompletion``), ``prompts`` (one loader per benchmark), ``labelled`` (judge-agreement
labels), ``status`` (``data verify``), ``subsets`` (seeded subsets, overlap checks), ``splits``
(the dev/test split).

Every file the harness reads is pinned here (source URL at a fixed commit, sha256, row count), so
a run is reproducible and ``safesteer-bench data verify`` can prove a data folder is the expected
one. Files are found in this order (docs/architecture.md §6):

1. the explicit ``data_dir`` (the CLI's ``--data-dir``),
2. ``$SAFESTEER_BENCH_DATA``,
3. the user cache ``cache_dir()/"data"``,
4. a download from the pinned URL into the cache (sha256-checked, atomic), unless offline.

A data folder has the layout of ``../shared/datasets`` (see its MANIFEST.md). Local files are
trusted as they are (checking sha256 on every load would reject deliberately edited copies);
``verify`` is the explicit check. Loaders use only the stdlib (csv/json/gzip) so they are fast
and have no heavy imports; every malformed row is a :class:`UserError` naming file and line.
"""

from __future__ import annotations

from .registry import DATA_FILES, DOWNLOAD_TIMEOUT_S, DataFile, ENV_DATA, ENV_DATA_URL, ENV_OFFLINE, PLACEHOLDER, RAW_BASE, XSTEST_LABELED_MODELS, get_file
from .resolve import ResolvedFile, data_roots, find_local, offline, resolve, source_url
from .readers import Row, count_rows, file_sha256, read_csv, read_json, read_jsonl, read_lines
from .records import LabeledCompletion, Prompt
from .prompts import PROMPT_LOADERS, harmbench_prompt_text, load_advbench, load_alpaca, load_gptfuzzer_questions, load_gptfuzzer_templates, load_harmbench, load_jailbreakbench_benign, load_jailbreakbench_harmful, load_maliciousinstruct, load_prompts, load_strongreject, load_tdc2023, load_xstest
from .labelled import load_gptfuzzer_labeled, load_xstest_labeled
from .status import FileStatus, format_status_table, status, verify
from .subsets import EVALUATION_LOADERS, normalize_text, overlap, seeded_subset, without_evaluation_prompts
