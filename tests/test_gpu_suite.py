"""bench/gpu_suite.py: its dry run takes every row's code path on tiny models on the CPU, and a row that fails or
hangs is reported in the table without losing the rows after it.

The runs get a total budget far above the dry run's own minute, so that a busy machine cannot fail them: these tests
check behaviour, not speed.
"""

import json
import os
import subprocess
import sys

import pytest

from longvideo.bench.gpu_suite import selected_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_suite(tmp_path, *arguments):
    out = tmp_path / "suite.json"
    command = [sys.executable, os.path.join(ROOT, "bench", "gpu_suite.py"), "--dry-run", "--json", str(out),
               "--total-budget", "900", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text()), completed.stdout


def test_dry_run_measures_every_row(tmp_path):
    document, printed = run_suite(tmp_path, "--row-budget", "300")
    names = [row.name for row in selected_rows(True, None)]
    assert [row["row"] for row in document["rows"]] == names
    assert {row["row"]: row.get("error") for row in document["rows"] if row["status"] != "ok"} == {}
    assert document["dry_run"] and document["machine"].startswith("dry run on the CPU")
    table = printed.split("JSON in")[1]  # the final table, after the rows printed as they finished
    assert all(name in table for name in names)

    results = {row["row"]: row["result"] for row in document["rows"]}
    for dtype in ("fp16", "bf16"):  # the same work as the pipeline: only the low-precision rounding differs
        assert results[f"vs_diffusers/{dtype}/256x256x16"]["max_difference"] < 0.1
    assert results["continuation_fps"]["frames"] == 10 and results["continuation_fps"]["chunks"] == 3
    assert results["continuation_fps"]["flops_per_call"] > 0
    assert [run["frames"] for run in results["memory/continuation"]["runs"]] == [7, 13]
    assert [run["frames"] for run in results["memory/hierarchy"]["runs"]] == [5, 9]
    assert set(results["temporal_attention/T=1024"]["modes"]) == {"full", "window", "dual_scope", "eager-full"}
    assert results["hierarchy_vs_continuation"]["frames"] == 5
    for option in ("sdpa_flash", "sdpa_math", "channels_last", "compile"):  # an option changes speed, not the video
        assert results[f"option/{option}"]["max_difference"] < 1e-4


def test_a_failing_and_a_hanging_row_leave_the_others(tmp_path):
    rows = ["host_syncs", "memory/hierarchy", "option/sdpa_math"]
    document, printed = run_suite(tmp_path, "--rows", *rows, "--row-budget", "15",
                                  "--inject", "fail:host_syncs", "--inject", "hang:memory/hierarchy")
    outcome = {row["row"]: row for row in document["rows"]}
    assert outcome["host_syncs"]["status"] == "failed" and "injected failure" in outcome["host_syncs"]["error"]
    assert outcome["memory/hierarchy"]["status"] == "timed out"
    assert "15 s budget" in outcome["memory/hierarchy"]["error"]
    assert outcome["option/sdpa_math"]["status"] == "ok"
    assert "injected failure" in printed and "timed out" in printed


def test_unknown_rows_are_named():
    with pytest.raises(SystemExit, match="unknown rows \\['nope'\\]"):
        selected_rows(True, ["nope"])
    with pytest.raises(SystemExit, match="option/sdpa_cudnn"):  # a GPU-only row is not in the dry run
        selected_rows(True, ["option/sdpa_cudnn"])


def test_every_gpu_row_binds_its_parameters():
    """The GPU rows never run here: at least their parameters must fit the functions the dry run exercises."""
    import inspect

    rows = selected_rows(False, None)
    assert len(rows) == 16
    for row in rows:
        inspect.signature(row.function).bind(None, **row.full)
