"""Corruption trials (issue 19): damage the data directory of a stopped server in one random
way (bit flip, truncation, zero-fill or deletion of a segment, an index file or the catalog),
restart it, read every shard back, and require that no acknowledged record is lost silently,
no wrong record is returned, and the server does not crash: each damage is either repaired,
refused at start with a clear message (a panic is not one), or reported as DATA_LOSS.

The trials are those of scripts/corruption_trials.py (see its docstring), run in-process:
STREAMCELL_CORRUPTION_TRIALS (default 40) trials of seed STREAMCELL_CORRUPTION_SEED (default 19).
A failed trial keeps its directory (server log, data dir, copy of the damaged data dir) under
pytest's tmp_path, and the assertion message gives the `--seed N --trial K` that replays it:

    .venv/bin/python scripts/corruption_trials.py --seed 19 --trial K --keep all
"""

import importlib.util
import os
import sys

import pytest

from helpers import REPO_ROOT, server_binary

TRIALS = int(os.environ.get("STREAMCELL_CORRUPTION_TRIALS", "40"))
SEED = int(os.environ.get("STREAMCELL_CORRUPTION_SEED", "19"))


def _load_trials_module():
    path = REPO_ROOT / "scripts" / "corruption_trials.py"
    spec = importlib.util.spec_from_file_location("corruption_trials", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_corruption_trials(tmp_path, capsys):
    binary = server_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"streamcell binary not found at {binary}: run `cargo build` first "
                    "(or set STREAMCELL_BIN / CARGO_TARGET_DIR)", pytrace=False)
    ct = _load_trials_module()

    def progress(r):
        with capsys.disabled():
            print(f"\n[corruption seed={SEED}] {ct.format_row(r)}", end="", flush=True)

    results = ct.run_trials(binary, TRIALS, SEED, workdir=tmp_path / "trials", progress=progress)
    report = ct.summary(results)
    with capsys.disabled():
        print("\n" + report, flush=True)
    assert len(results) == TRIALS
    failed = [r for r in results if r.failed]
    if failed:
        pytest.fail(f"{len(failed)} of {TRIALS} corruption trials FAILED (seed {SEED}):\n"
                    + "\n".join(ct.format_row(r) for r in failed) + "\n\n" + report, pytrace=False)
