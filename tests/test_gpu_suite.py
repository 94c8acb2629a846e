"""bench/gpu_suite.py: its dry run takes every row's code path on tiny models on the CPU (the comfy/* rows on the real
ComfyUI, which CI provides), and a row that fails, hangs or cannot run on the machine is reported in the table without
losing the rows after it.

The runs get a total budget far above the dry run's own two minutes, so that a busy machine cannot fail them: these tests
check behaviour, not speed.
"""

import json
import os
import subprocess
import sys

import pytest

from longvideo.bench.gpu_suite import comfyui_location, selected_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFY_ROWS = ["comfy/wan1.3b/continuation_chunk", "comfy/wan1.3b/learned_infill", "comfy/a14b/two_experts"]


def comfyui_found() -> bool:
    try:
        comfyui_location()
    except RuntimeError:
        if os.environ.get("CI") == "true":
            pytest.fail("ComfyUI was not found in CI: .ci/run must provide it (COMFYUI_PATH or ../shared/comfyui)")
        return False
    return True


def run_suite(tmp_path, *arguments, env=None):
    out = tmp_path / "suite.json"
    command = [sys.executable, os.path.join(ROOT, "bench", "gpu_suite.py"), "--dry-run", "--json", str(out),
               "--total-budget", "900", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path,
                               env=None if env is None else {**os.environ, **env})
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text()), completed.stdout


def test_dry_run_measures_every_row(tmp_path):
    with_comfyui = comfyui_found()
    document, printed = run_suite(tmp_path, "--row-budget", "300")
    names = [row.name for row in selected_rows(True, None)]
    assert [row["row"] for row in document["rows"]] == names
    failed = {row["row"]: row.get("error") for row in document["rows"] if row["status"] != "ok"}
    if not with_comfyui:  # a machine without ComfyUI: its rows say so, the others run
        assert set(failed) == set(COMFY_ROWS) and all("ComfyUI was not found" in error for error in failed.values())
        failed = {}
    assert failed == {}
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
    for name in ("ranks/hierarchical", "ranks/co_denoise"):  # one video on 1 and on 2 gloo ranks: the same video
        runs = results[name]["runs"]
        assert [run["ranks"] for run in runs] == [1, 2] and results[name]["left_out"] == [], name
        assert runs[1]["max_difference"] <= 1e-5 and results[name]["max_difference"] <= 1e-5, name
        assert all(run["seconds"] > 0 and run["wall_s"] >= run["seconds"] for run in runs), name
        assert runs[0]["kb_per_step"] == [0.0] and min(runs[1]["kb_per_step"]) > 0, name  # 2 ranks exchange frames
        assert runs[1]["limit"] > 1, name
    if with_comfyui:  # ours and ComfyUI's own chain sample the same latents (as tests/test_comfy_learned.py finds)
        for name in COMFY_ROWS:
            assert results[name]["max_difference"] <= 1e-4, name
            assert results[name]["mean_abs"] > 0.1 and results[name]["ratio"] > 0, name
        assert results["comfy/wan1.3b/continuation_chunk"]["latent_frames"] == 4
        assert results["comfy/wan1.3b/learned_infill"]["build_s"] is None  # the row before's model and VAE
        assert results["comfy/a14b/two_experts"]["pixel_frames"] == 9


def test_a_failing_a_hanging_and_a_skipped_row_leave_the_others(tmp_path):
    rows = ["host_syncs", "memory/hierarchy", "temporal_attention/T=1024", "option/sdpa_math"]
    document, printed = run_suite(tmp_path, "--rows", *rows, "--row-budget", "15", "--inject", "fail:host_syncs",
                                  "--inject", "hang:memory/hierarchy", "--inject", "skip:temporal_attention/T=1024")
    outcome = {row["row"]: row for row in document["rows"]}
    assert outcome["host_syncs"]["status"] == "failed" and "injected failure" in outcome["host_syncs"]["error"]
    assert outcome["memory/hierarchy"]["status"] == "timed out"
    assert "15 s budget" in outcome["memory/hierarchy"]["error"]
    skipped = outcome["temporal_attention/T=1024"]
    assert skipped["status"] == "skipped" and skipped["error"].startswith("skipped: injected: needs more")
    assert outcome["option/sdpa_math"]["status"] == "ok"
    assert "injected failure" in printed and "timed out" in printed and "skipped: injected" in printed


def test_comfy_rows_without_comfyui_say_where_to_point(tmp_path):
    document, _ = run_suite(tmp_path, "--rows", "comfy/a14b/*", env={"COMFYUI_PATH": str(tmp_path)})
    (row,) = document["rows"]
    assert row["row"] == "comfy/a14b/two_experts" and row["status"] == "failed"
    assert f"ComfyUI was not found: COMFYUI_PATH={tmp_path} is not a ComfyUI checkout" in row["error"]


def test_unknown_rows_are_named():
    with pytest.raises(SystemExit, match="unknown rows \\['nope'\\]"):
        selected_rows(True, ["nope"])
    with pytest.raises(SystemExit, match="option/sdpa_cudnn"):  # a GPU-only row is not in the dry run
        selected_rows(True, ["option/sdpa_cudnn"])
    assert [row.name for row in selected_rows(False, ["comfy/*"])] == COMFY_ROWS  # shell patterns pick rows
    with pytest.raises(SystemExit, match="unknown rows \\['comfy/nope\\*'\\]"):
        selected_rows(True, ["comfy/nope*"])


def test_every_gpu_row_binds_its_parameters():
    """The GPU rows never run here: at least their parameters must fit the functions the dry run exercises."""
    import inspect

    rows = selected_rows(False, None)
    assert len(rows) == 21
    for row in rows:
        inspect.signature(row.function).bind(None, **row.full)
