"""Hierarchical levels and co-denoised windows split over ranks (worker processes over gloo on the CPU), against the
same run in one process; and what happens when a rank dies or stops answering."""

import os
import signal
import time

import psutil
import pytest
import torch

from longvideo.models.loader import load_text_to_video
from longvideo.models.rank_models import rank_model
from longvideo.nodes.co_denoise import LongVideoCoDenoiseSampler
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler
from longvideo.sampling import distributed_launch, hierarchy
from longvideo.utils.video_io import load_latent_file
from tiny_models import save_tiny_text_to_video

CFG = 5.0
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_tiny_text_to_video(str(tmp_path_factory.mktemp("ranks") / "tiny-t2v"))


@pytest.fixture(scope="module")
def model(model_folder):
    return load_text_to_video(model_folder).denoiser


def conditioning(model, seed):
    tokens = torch.randn(1, 4, model.context_width, generator=torch.Generator().manual_seed(seed))
    return [[tokens, {"pooled_output": None}]]


def hierarchical(model, devices="", **options):
    prompts = [conditioning(model, 1), conditioning(model, 2)]
    settings = dict(prompt_layout="timeline", width=32, height=32, keyframes=3, depth=3, method="replace", seed=4, steps=2,
                    cfg=CFG, scheduler="ddim", batch_cap=1)
    return LongVideoHierarchicalSampler().sample(model, prompts, conditioning(model, 3), **{**settings, **options},
                                                 devices=devices)[0]["samples"]


def co_denoised(model, devices=""):
    return LongVideoCoDenoiseSampler().sample(model, conditioning(model, 1), conditioning(model, 3), 32, 32, 20, 8, 4,
                                              "freenoise", 6, 3, CFG, "ddim", prompt_schedule=None, devices=devices,
                                              layout_share=0.4)[0]["samples"]


@pytest.mark.parametrize("ranks", [2, 3])
def test_hierarchical_levels_over_ranks_equal_one_process(model, ranks):
    one = hierarchical(model)
    split = hierarchical(model, ", ".join(["cpu"] * ranks))
    assert split.shape == one.shape == (1, 4, 9, 4, 4)
    assert (split - one).abs().max() <= 1e-5  # segments batched differently: float rounding only


@pytest.mark.parametrize("ranks", [2, 3])
def test_co_denoised_windows_over_ranks_equal_one_process(model, ranks):
    one = co_denoised(model)
    split = co_denoised(model, ", ".join(["cpu"] * ranks))
    assert split.shape == one.shape == (1, 4, 20, 4, 4)
    assert (split - one).abs().max() <= 1e-5


def test_devices_are_checked_before_anything_runs(model):
    with pytest.raises(NodeInputError, match="LongVideoHierarchicalSampler: 'devices': device 'gpu7' is not a device name"):
        hierarchical(model, "gpu7, cpu")
    with pytest.raises(NodeInputError, match="'devices': device 'cuda:0' is a CUDA device but CUDA is not available"):
        co_denoised(model, "cuda:0, cuda:1")
    assert distributed_launch.resolve_devices("all") is None  # no GPU here: this process, and a log line says so
    assert distributed_launch.resolve_devices("cpu") is None


def hierarchy_payload(model, depth=3, steps=2):
    tokens = conditioning(model, 1)[0][0]
    return {"model": rank_model(model), "infill_model": None, "plan": [3, depth],
            "settings": vars(hierarchy.HierarchySettings(batch_cap=1)), "prompts": [[tokens]] * depth,
            "negative": conditioning(model, 3)[0][0], "cfg": CFG, "size": [4, 4], "steps": steps, "seed": 4,
            "scheduler": "ddim", "start": None}


def no_process_left(pids) -> bool:
    return not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("fault", ["killed", "stopped"])
def test_a_dead_or_stopped_rank_ends_the_run_naming_it(model, fault):
    """A rank killed (SIGKILL) or stopped (SIGSTOP: no heartbeat) after the keyframes ends the run within the stated
    time, naming the rank; the levels rank 0 reported are there to keep; no worker is left behind."""
    pids, levels, struck = [], [], []

    def strike(rank, report):
        levels.append(report["level"])
        if not struck:
            os.kill(pids[1], signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
            struck.append(time.monotonic())

    message = "its process died .killed by SIGKILL" if fault == "killed" else "it stopped answering: no heartbeat for 15 s"
    with pytest.raises(distributed_launch.DistributedRunError, match=f"worker rank 1 failed: {message}") as raised:
        distributed_launch.run_ranks(["cpu", "cpu"], "sampling.distributed_launch:hierarchy_job",
                                     hierarchy_payload(model, depth=4, steps=50), on_start=pids.extend, on_report=strike,
                                     timeout_s=TIMEOUT_S, stall_timeout_s=15)
    assert raised.value.rank == 1 and levels[0] == 0
    assert time.monotonic() - struck[0] < (30 if fault == "killed" else 15 + 30)
    assert no_process_left(pids)


def test_the_node_keeps_the_finished_levels_when_a_rank_fails(model, monkeypatch, tmp_path):
    """What rank 0 reported before the failure is saved as a resumable .latent (hierarchical_partial_*)."""
    keyframes = torch.randn(1, 4, 3, 4, 4)

    def failing_run(devices, job, payload, on_step=None, check_cancel=None, on_report=None, **options):
        on_report(0, {"level": 0, "latents": keyframes.numpy()})
        raise distributed_launch.DistributedRunError(1, "its process died (killed by SIGKILL)")

    monkeypatch.setattr(distributed_launch, "run_ranks", failing_run)
    with pytest.raises(distributed_launch.DistributedRunError, match="worker rank 1 failed"):
        hierarchical(model, "cpu, cpu")
    (partial,) = [f for f in os.listdir(os.environ["LONGVIDEO_OUTPUT_DIR"] + "/LongVideo") if f.endswith(".latent")]
    assert partial.startswith("hierarchical_partial")
    saved, _ = load_latent_file(os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], "LongVideo", partial))
    assert torch.equal(saved, keyframes)
