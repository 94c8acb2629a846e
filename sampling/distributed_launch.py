"""Clip-parallel ranks as processes: one worker per device, each loading the model itself.

`run_ranks(devices, job, payload)` starts one spawned process per device (torch.multiprocessing, spawn), joins
them into a torch.distributed group (NCCL on CUDA, gloo on the CPU) through a TCPStore this process hosts on a
port the OS picks, runs `job(RankContext, payload)` in each and returns the ranks' results in rank order.

Faults: when a worker raises, dies (killed, out of memory) or the caller cancels (`check_cancel` raising), every
worker is terminated (SIGTERM, then SIGKILL after a few seconds), joined, and the error names the failing rank.
A rank that only failed because its peer vanished is not blamed when the one that vanished is known. Every worker
sends a heartbeat every HEARTBEAT_S seconds from a thread of its own; a rank silent for `stall_timeout_s` (default
STALL_TIMEOUT_S, or $LONGVIDEO_RANK_TIMEOUT_S) is taken as hung (stopped with SIGSTOP, swapped out, deadlocked) and
the run ends naming it, instead of waiting for torch.distributed's own collective timeout. Workers also exit by
themselves when this process disappears, so none is left behind.

Workers start from `distributed_worker.py` (a file path, not a module name), so they need neither this package
importable by name nor the host program's __main__ (ComfyUI's main.py) run again.
"""

import datetime
import logging
import multiprocessing.connection
import os
import runpy
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .distributed import ClipParallelSettings, ClipRankError, Communicator, TorchCommunicator, sample_clip
from .denoise import TextGuidance

log = logging.getLogger(__name__)
WORKER_ENTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
TERMINATE_GRACE_S = 5.0
BLAME_GRACE_S = 1.0
COLLECTIVE_TIMEOUT_S = 1800
HEARTBEAT_S = 2.0
STALL_TIMEOUT_S = 120.0


@dataclass
class RankContext:
    """What a job gets in its worker: its rank, device, communicator and a way to report steps."""

    rank: int
    world_size: int
    device: torch.device
    comm: Communicator
    report_step: Callable[[int, int], None]
    report: Callable[[object], None] = lambda data: None  # plain data to the launcher's on_report (finished frames)


class DistributedRunError(ClipRankError):
    """A worker process failed, died or stopped answering; the message names its rank and says what happened."""

    what = "worker"


def parse_devices(devices) -> list[torch.device]:
    """'cuda:0, cuda:1', [0, 1] (CUDA indices) or 'cpu, cpu' -> torch devices, checked against this machine."""
    items = devices.replace(",", " ").split() if isinstance(devices, str) else list(devices)
    parsed = []
    for item in items:
        text = str(item).strip()
        try:
            device = torch.device(f"cuda:{text}" if text.isdigit() else text)
        except RuntimeError:
            raise ValueError(f"device '{text}' is not a device name: use 'cuda:0' (or just 0) or 'cpu'") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device '{text}' is a CUDA device but CUDA is not available here: list 'cpu' devices instead")
            index = 0 if device.index is None else device.index
            if index >= torch.cuda.device_count():
                raise ValueError(f"device '{text}' does not exist: this machine has {torch.cuda.device_count()} CUDA devices")
            device = torch.device("cuda", index)
        elif device.type != "cpu":
            raise ValueError(f"device '{text}' is not supported: use CUDA devices ('cuda:0' or '0') or 'cpu'")
        parsed.append(device)
    if not parsed:
        raise ValueError("no devices listed: give one device per rank, e.g. 'cuda:0, cuda:1'")
    if len({d.type for d in parsed}) > 1:
        raise ValueError("devices mix CUDA and CPU: one run uses one kind (NCCL for CUDA, gloo for the CPU)")
    return parsed


def resolve_devices(devices: str) -> list[torch.device] | None:
    """The devices a run is split over, one worker process each, or None to run in this process: '' (this process),
    'all' (every CUDA GPU here; with fewer than two, this process, saying so) or a list parse_devices reads (one
    device: this process, on the device it uses)."""
    text = devices.strip()
    if not text:
        return None
    if text.lower() == "all":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < 2:
            log.info("devices 'all': %s GPU here, so the run stays in this process", "one" if count == 1 else "no")
            return None
        return [torch.device("cuda", index) for index in range(count)]
    parsed = parse_devices(text)
    if len(parsed) == 1:
        log.info("devices '%s' names one device: the run stays in this process, on the device it uses", text)
        return None
    return parsed


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def run_ranks(devices, job: str, payload: dict, *, on_step: Callable[[int, int], None] | None = None,
              check_cancel: Callable[[], None] | None = None, on_start: Callable[[list[int]], None] | None = None,
              timeout_s: float | None = None, on_report: Callable[[int, object], None] | None = None,
              stall_timeout_s: float | None = None) -> list:
    """Run `job` ("module:function" inside this package, e.g. "sampling.distributed_launch:sample_job") on one worker
    per device; returns each rank's result. `payload` must be plain data (numbers, strings, lists, dicts, numpy
    arrays, torch tensors): workers unpickle it before this package is importable there. `on_step(step, total)`
    follows rank 0, `on_report(rank, data)` gets what a rank's job reports (RankContext.report), `check_cancel()` runs
    between events and stops everything when it raises, `on_start(pids)` gets the workers' pids, after `timeout_s`
    seconds the run is stopped with TimeoutError, and a rank silent for `stall_timeout_s` ends it naming the rank.
    """
    import torch.distributed as dist

    devices = parse_devices(devices)
    world = len(devices)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    context = torch.multiprocessing.get_context("spawn")
    # One pipe per worker (no queue: no feeder threads or semaphores to leak when a worker is killed).
    pipes = [context.Pipe(duplex=False) for _ in devices]
    processes = []
    for rank, device in enumerate(devices):
        arguments = {"rank": rank, "world_size": world, "device": str(device), "port": store.port, "job": job,
                     "payload": payload, "events": pipes[rank][1], "parent_pid": os.getpid(),
                     "threads": torch.get_num_threads()}
        processes.append(context.Process(
            target=runpy.run_path, args=(WORKER_ENTRY,), kwargs={"init_globals": {"WORKER_ARGUMENTS": arguments},
                                                                "run_name": "__longvideo_worker__"},
            name=f"longvideo-rank-{rank}", daemon=True,
        ))
    try:
        with _host_main_hidden():
            for process in processes:
                process.start()
        for _, writer in pipes:
            writer.close()  # the workers hold theirs: a worker's pipe reads EOF once it is gone
        if on_start is not None:
            on_start([p.pid for p in processes])
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stall = stall_timeout_s or float(os.environ.get("LONGVIDEO_RANK_TIMEOUT_S", STALL_TIMEOUT_S))
        return _collect(processes, [reader for reader, _ in pipes], on_step, check_cancel, deadline, on_report, stall)
    finally:
        _stop(processes)
        for reader, writer in pipes:
            reader.close()
            writer.close()
        del store


def _collect(processes, readers, on_step, check_cancel, deadline, on_report, stall_timeout_s) -> list:
    world = len(processes)
    results: dict[int, object] = {}
    errors: dict[int, tuple[str, bool]] = {}
    open_readers = dict(zip(readers, range(world)))
    heard = [time.monotonic()] * world
    failed_at = None

    def receive(timeout: float) -> None:
        for reader in multiprocessing.connection.wait(list(open_readers), timeout):
            try:
                event = reader.recv()
            except (EOFError, OSError):
                del open_readers[reader]
                continue
            kind, rank = event[0], event[1]
            heard[rank] = time.monotonic()
            if kind == "step" and rank == 0 and on_step is not None:
                on_step(*event[2:])
            elif kind == "report" and on_report is not None:
                on_report(rank, event[2])
            elif kind == "done":
                results[rank] = event[2]
            elif kind == "error":
                errors[rank] = (event[2], event[3])

    while len(results) < world:
        if check_cancel is not None:
            check_cancel()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the multi-process run did not finish in time; ranks {sorted(set(range(world)) - set(results))} were still running")
        receive(0.1)
        gone = [r for r in range(world) if r not in results and r not in open_readers.values()]
        if failed_at is None and (errors or gone):
            failed_at = time.monotonic()
        silent = [rank for rank in range(world) if rank not in results and time.monotonic() - heard[rank] > stall_timeout_s]
        if silent and failed_at is None:  # a rank that died or raised is the one to blame, not the ones waiting on it
            raise DistributedRunError(silent[0], f"it stopped answering: no heartbeat for {stall_timeout_s:.0f} s from "
                                                 f"{processes[silent[0]].name} (pid {processes[silent[0]].pid}: stopped, hung "
                                                 "or swapped out); the run was ended (timeout: stall_timeout_s or "
                                                 "$LONGVIDEO_RANK_TIMEOUT_S)")
        if failed_at is not None and (time.monotonic() - failed_at > BLAME_GRACE_S or not open_readers):
            _raise_failure(processes, results, errors)
    return [results[rank] for rank in range(world)]


def _raise_failure(processes, results, errors) -> None:
    """Blame a rank that raised on its own, else one that died without a word, else one that lost its peer."""
    for process in processes:
        process.join(0.5)  # a rank whose pipe closed is exiting: let its exit code arrive
    own = [r for r, (_, peer_lost) in errors.items() if not peer_lost]
    dead = [r for r, p in enumerate(processes) if r not in results and r not in errors and p.exitcode not in (None, 0)]
    rank = min(own or dead or list(errors) or [r for r in range(len(processes)) if r not in results])
    if rank in errors:
        message = errors[rank][0]
    else:
        message = f"its process died ({_describe_exit(processes[rank].exitcode)}) on {processes[rank].name}"
    others = sorted(set(errors) - {rank})
    if others:
        message += f"; ranks {', '.join(map(str, others))} stopped after it"
    raise DistributedRunError(rank, message)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code yet"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _stop(processes) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_S
    for process in processes:
        if process.pid is not None:
            process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


@contextmanager
def _host_main_hidden():
    """Spawned children re-run the parent's __main__ module unless it looks interactive; ComfyUI's main.py would
    then set up its server again in every worker. The workers need nothing from it."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


# ---------------------------------------------------------------------------------------------------
# inside a worker


def worker_main(rank: int, world_size: int, device: str, port: int, job: str, payload: dict, events, parent_pid: int,
                package, threads: int = 0) -> None:
    """The body of a worker process (called by distributed_worker.py once the package is importable). `threads`: the
    launching process's torch thread count, which CPU ranks take so that they compute as it does (a thread count
    changes the rounding of CPU kernels)."""
    import importlib

    import torch.distributed as dist

    if threads:
        torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    _thread_only_progress_lock()
    lock = threading.Lock()

    def send(event) -> None:  # the heartbeat thread and the job share the pipe
        with lock:
            events.send(event)

    threading.Thread(target=_heartbeat, args=(send, rank), daemon=True).start()
    device = torch.device(device)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        dist.init_process_group(backend_for(device), store=store, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        module_name, function_name = job.split(":")
        function = getattr(importlib.import_module(f"{package.__name__}.{module_name}"), function_name)
        context = RankContext(rank, world_size, device, TorchCommunicator(device),
                              lambda step, total: send(("step", rank, step, total)), lambda data: send(("report", rank, data)))
        result = function(context, payload)
        send(("done", rank, result))
    except BaseException as error:
        try:
            send(("error", rank, f"{type(error).__name__}: {error}\n{traceback.format_exc()[-4000:]}", _peer_lost(error)))
        except OSError:
            pass  # the launching process is gone; nobody is left to tell
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _peer_lost(error: BaseException) -> bool:
    """Whether `error` only says another rank went away (a closed connection, a timeout in a collective)."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error).lower()
    return any(sign in text for sign in ("connection closed", "connection reset", "broken pipe", "timed out", "timeout",
                                         "gloo", "nccl", "peer"))


def _thread_only_progress_lock() -> None:
    """tqdm (the loaders' progress bars) otherwise creates a multiprocessing lock, a semaphore that the shared resource
    tracker reports as leaked when the worker ends; a worker's bars only need a thread lock."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def _heartbeat(send, rank: int) -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        try:
            send(("alive", rank))
        except OSError:
            return


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


# ---------------------------------------------------------------------------------------------------
# jobs


def sample_job(context: RankContext, payload: dict) -> dict:
    """Load the model on this rank's device and sample its clip; returns the latents (numpy) and what the rank saw.

    payload: model_path, dtype ("fp32"/"fp16"/"bf16"), settings (ClipParallelSettings fields), prompts (list of
    [positive, negative or None] numpy embeddings), cfg, size, steps, seed, scheduler.
    """
    from ..models.loader import DTYPES, load_text_to_video
    from ..models.clip_parallel import clip_parallel_hooks
    from .distributed import clip_prompt_index

    model = load_text_to_video(payload["model_path"], DTYPES[payload["dtype"]])
    denoiser = model.denoiser
    denoiser.unet.to(context.device)
    settings = ClipParallelSettings(**payload["settings"])
    prompts = payload["prompts"]
    positive, negative = prompts[clip_prompt_index(context.rank, context.world_size, len(prompts))]
    guidance = TextGuidance(torch.from_numpy(positive), None if negative is None else torch.from_numpy(negative), payload["cfg"])
    context.comm.all_gather(torch.zeros(1, device=context.device))  # start the clock together: loading times differ
    started, started_cpu = time.perf_counter(), time.process_time()
    with clip_parallel_hooks(denoiser.unet):
        result = sample_clip(denoiser, context.comm, settings, guidance, size=tuple(payload["size"]), steps=payload["steps"],
                             seed=payload["seed"], scheduler=payload["scheduler"], device=context.device,
                             callback=lambda step, total, _: context.report_step(step, total))
    return {"latents": result.latents.numpy(), "timesteps": result.timesteps, "bytes_received": result.bytes_received,
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - started_cpu,
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float | None:
    try:
        import resource  # not on Windows
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def video_job(context: RankContext, payload: dict) -> str | None:
    """tools/distributed_generate.py's rank: encode this clip's prompt, sample the clip, decode it; rank 0 writes the
    video, taking the clips' frames in rank order, one clip at a time. Returns the video's path on rank 0."""
    import json

    import torch.distributed as dist

    from ..models.clip_parallel import clip_parallel_hooks
    from ..models.loader import DTYPES, load_text_to_video
    from ..utils.video_io import VideoWriter, reserve_output_path
    from .distributed import clip_prompt_index

    model = load_text_to_video(payload["model_path"], DTYPES[payload["dtype"]])
    prompts = payload["prompts"]
    prompt = prompts[clip_prompt_index(context.rank, context.world_size, len(prompts))]
    positive, _ = model.text_encoder.encode([prompt])
    negative, _ = model.text_encoder.encode([payload["negative_prompt"]])
    model.denoiser.unet.to(context.device)
    with clip_parallel_hooks(model.denoiser.unet):
        clip = sample_clip(model.denoiser, context.comm, ClipParallelSettings(**payload["settings"]),
                           TextGuidance(positive, negative, payload["cfg"]), size=tuple(payload["size"]), steps=payload["steps"],
                           seed=payload["seed"], scheduler=payload["scheduler"], device=context.device,
                           callback=lambda step, total, _: context.report_step(step, total))
    frames = torch.cat([(batch * 255).round().to(torch.uint8) for batch in model.vae.decode_batches(clip.latents, 16)])
    transfer_device = context.device if context.device.type == "cuda" else torch.device("cpu")
    if context.rank != 0:
        dist.send(frames.to(transfer_device), dst=0)
        return None
    os.makedirs(payload["base_path"], exist_ok=True)
    reservation = reserve_output_path(payload["base_path"], payload["file_name"], "mp4")  # a number no other run takes
    path = reservation.path
    with reservation, VideoWriter(reservation, payload["export_fps"]) as writer:
        writer.write(frames)
        for rank in range(1, context.world_size):
            received = torch.empty(frames.shape, dtype=torch.uint8, device=transfer_device)
            dist.recv(received, src=rank)
            writer.write(received.cpu())
    with open(os.path.splitext(path)[0] + ".json", "w", encoding="utf-8") as handle:
        json.dump(payload["config"], handle, indent=2)
    return path


def hierarchy_job(context: RankContext, payload: dict):
    """One rank of hierarchical sampling split over ranks (sampling/hierarchy.py with a Communicator): the segments of
    every level are shared among the ranks and gathered after it. Rank 0 reports every finished level's frames (kept if
    a later level fails); every rank returns rank_result.

    payload: model and infill_model (models/rank_models.py), plan [keyframes, depth], settings (HierarchySettings
    fields), prompts (per level, a list of prompts: see rank_prompts), negative, cfg, size, steps, seed, scheduler,
    start (latents or None).
    """
    from . import hierarchy

    denoiser = build_in_turn(context, payload["model"])
    infill = None if payload["infill_model"] is None else build_in_turn(context, payload["infill_model"])
    started = time.perf_counter()
    plan = hierarchy.HierarchyPlan(*payload["plan"])
    # Results and reports go as numpy arrays: a tensor would go as shared memory that the rank's exit can take away.
    report = (lambda level, frames: context.report({"level": level, "latents": frames.numpy()})) if context.rank == 0 else None
    video = hierarchy.sample_hierarchy(
        denoiser, plan, [[rank_prompt(p, denoiser) for p in level] for level in payload["prompts"]],
        rank_prompt(payload["negative"], denoiser), payload["cfg"], hierarchy.HierarchySettings(**payload["settings"]),
        size=tuple(payload["size"]), steps=payload["steps"], seed=payload["seed"], scheduler=payload["scheduler"],
        start=payload["start"], on_step=lambda level, step: context.report_step(step, payload["steps"]),
        infill_denoiser=infill, comm=context.comm, on_level=report,
    )
    return rank_result(context, video, started)


def co_denoise_job(context: RankContext, payload: dict):
    """One rank of co-denoising split over ranks (sampling/co_denoise.py with a Communicator): every step's windows
    are shared among the ranks and their blended sums added up. Every rank returns rank_result.

    payload: model (models/rank_models.py), settings (CoDenoiseSettings fields), prompts (TextGuidance fields: see
    rank_prompts), size, steps, seed, scheduler, start (latents or None).
    """
    from . import co_denoise

    denoiser = build_in_turn(context, payload["model"])
    started = time.perf_counter()
    prompts = [TextGuidance.from_prompts(rank_prompt(p["positive"], denoiser), rank_prompt(p["negative"], denoiser), p["cfg"])
               for p in payload["prompts"]]
    video = co_denoise.co_denoise_video(
        denoiser, prompts, co_denoise.CoDenoiseSettings(**payload["settings"]), size=tuple(payload["size"]),
        steps=payload["steps"], seed=payload["seed"], scheduler=payload["scheduler"], start=payload["start"],
        on_step=lambda step, total: context.report_step(step, total), comm=context.comm,
    )
    return rank_result(context, video, started)


def rank_result(context: RankContext, video: torch.Tensor, started: float) -> dict:
    """What a rank of a split video returns: the video (rank 0; numpy: a tensor would go as shared memory that the
    rank's exit can take away), the bytes it received from other ranks and its sampling time."""
    return {"latents": video.numpy() if context.rank == 0 else None, "bytes_received": context.comm.bytes_received,
            "seconds": time.perf_counter() - started}


def build_in_turn(context: RankContext, spec: dict):
    """The model `spec` describes (models/rank_models.py), built by one rank after another: a rank holds a CPU copy of
    the weights while it builds, so at most one such copy exists on the machine at a time."""
    from ..models.rank_models import build_rank_model

    model = None
    for rank in range(context.world_size):
        if rank == context.rank:
            model = build_rank_model(spec, context.device)
        context.comm.all_gather(torch.zeros(1))  # the next rank starts when this one is done
    return model


def rank_prompts(prompts) -> list:
    """Prompts (token tensors or Prompts) as plain data for the ranks."""
    return [rank_prompt_data(p) for p in prompts]


def rank_prompt_data(prompt):
    """A prompt (token tensor, Prompt, or None) as plain data; a model's own conditioning goes with its rank model."""
    if prompt is None or isinstance(prompt, torch.Tensor):
        return prompt
    if getattr(prompt, "native", None) is None:
        return prompt.tokens
    from ..models.comfy_ranks import portable_conditioning

    return {"tokens": prompt.tokens, "native": portable_conditioning(prompt.native)}


def rank_prompt(data, denoiser):
    """The prompt `rank_prompt_data` made, rebuilt in a rank."""
    if data is None or isinstance(data, torch.Tensor):
        return data
    from ..models.comfy_ranks import conditioning_from_portable
    from .denoise import Prompt

    return Prompt(data["tokens"], conditioning_from_portable(data["native"]))
