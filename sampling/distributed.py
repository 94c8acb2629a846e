"""Clip-parallel sampling (Video-Infinity): one long video split into R clips of F frames, one clip per rank.

Every rank runs the one denoising loop (`denoise`) on its own clip with the same scheduler, steps and
timesteps; at every model call its temporal layers reach the neighbouring clips' boundary frames and the
global frames through a Communicator (models/clip_parallel.py says what crosses). Two Communicators:

- VirtualCommunicator: R ranks as threads of one process sharing one model (the single-GPU mode, and the
  reference the multi-process runs are tested against).
- TorchCommunicator: one rank per process over torch.distributed (NCCL on CUDA, gloo on the CPU); see
  sampling/distributed_launch.py for starting the processes.

Noise: clip r draws its noise from its own seed, `clip_seed(seed, r)` (clip 0 uses `seed` itself, so a one-clip
run is the plain sampler with the same seed). A rank needs nothing but its own seed, its memory does not grow
with R, and the virtual and multi-process runs draw the same numbers. Changing R moves the clip boundaries
and the noise, so it changes the video. Prompts: clip r uses prompts[floor(r * len(prompts) / R)].
"""

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..attention.temporal import DualScopeAttention
from ..models.clip_parallel import ClipDenoiser, clip_parallel_hooks
from .denoise import TextGuidance, denoise


class Communicator:
    """How one rank reaches the others. Every rank calls the same collectives in the same order.

    bytes_received counts what the rank has received from other ranks (for the benchmarks).
    """

    rank: int
    world_size: int
    device: torch.device
    bytes_received: int = 0

    def exchange_halos(self, first: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Send `first` to rank - 1 and `last` to rank + 1; return (rank - 1's `last`, rank + 1's `first`), None at the ends."""
        raise NotImplementedError

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (one shape on all ranks), in rank order."""
        raise NotImplementedError

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of `tensor` (one shape on all ranks), on `tensor`'s device."""
        return torch.stack([part.to(tensor.device) for part in self.all_gather(tensor)]).sum(0)

    def _count(self, tensors) -> None:
        self.bytes_received += sum(t.numel() * t.element_size() for t in tensors if t is not None)


class RanksStopped(RuntimeError):
    """Another rank failed or the run was cancelled, so this rank stopped at its next exchange."""


class VirtualGroup:
    """R virtual ranks (threads of one process) meeting at a barrier; `abort()` releases them all with RanksStopped."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.slots: list = [None] * world_size
        self.barrier = threading.Barrier(world_size)

    def communicator(self, rank: int, device="cpu") -> "VirtualCommunicator":
        return VirtualCommunicator(self, rank, device)

    def abort(self) -> None:
        self.barrier.abort()


class VirtualCommunicator(Communicator):
    """One virtual rank of a VirtualGroup: collectives are slot swaps between the rank threads."""

    def __init__(self, group: VirtualGroup, rank: int, device="cpu"):
        self.group = group
        self.rank = rank
        self.world_size = group.world_size
        self.device = torch.device(device)
        self.bytes_received = 0

    def _swap(self, value) -> list:
        try:
            self.group.slots[self.rank] = value
            self.group.barrier.wait()
            values = list(self.group.slots)
            self.group.barrier.wait()  # nobody overwrites a slot before everyone has read it
        except threading.BrokenBarrierError:
            raise RanksStopped("another rank stopped") from None
        return values

    def exchange_halos(self, first, last):
        values = self._swap((first.clone(), last.clone()))
        left = values[self.rank - 1][1] if self.rank > 0 else None
        right = values[self.rank + 1][0] if self.rank < self.world_size - 1 else None
        self._count((left, right))
        return left, right

    def all_gather(self, tensor):
        values = self._swap(tensor.clone())
        self._count(v for r, v in enumerate(values) if r != self.rank)
        return values


class TorchCommunicator(Communicator):
    """This process's rank in the default torch.distributed process group (initialised by the caller)."""

    def __init__(self, device):
        import torch.distributed as dist

        self.dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = torch.device(device)
        self.bytes_received = 0

    def exchange_halos(self, first, last):
        dist = self.dist
        operations, left, right = [], None, None
        if self.rank > 0:
            left = torch.empty(last.shape, dtype=last.dtype, device=last.device)
            operations += [dist.P2POp(dist.isend, first.contiguous(), self.rank - 1), dist.P2POp(dist.irecv, left, self.rank - 1)]
        if self.rank < self.world_size - 1:
            right = torch.empty(first.shape, dtype=first.dtype, device=first.device)
            operations += [dist.P2POp(dist.isend, last.contiguous(), self.rank + 1), dist.P2POp(dist.irecv, right, self.rank + 1)]
        if operations:
            for request in dist.batch_isend_irecv(operations):
                request.wait()
        self._count((left, right))
        return left, right

    def all_gather(self, tensor):
        home = tensor.device
        tensor = self._sendable(tensor)
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self.dist.all_gather(gathered, tensor)
        self._count(g for r, g in enumerate(gathered) if r != self.rank)
        return [g.to(home) for g in gathered]

    def _sendable(self, tensor):
        """NCCL sends tensors on this rank's GPU only: latents kept on the CPU go there for the exchange."""
        return tensor.contiguous().to(self.device) if self.device.type == "cuda" else tensor.contiguous()


@dataclass
class ClipParallelSettings:
    """The clip split and the dual-scope attention of a clip-parallel run.

    frames_per_clip: F, latent frames each rank samples. padding: attention frames taken from each neighbour
    (at most F are available). global_frames: frames at a fixed stride over the whole video that every frame sees.
    phases: (local_phase_t, local_phase_local_bias, local_phase_global_bias, global_phase_t, global_phase_local_bias,
    global_phase_global_bias) as in attention.temporal.DualScopeAttention. sync_group_norm: whole-video GroupNorm
    statistics in the temporal layers (the reference code keeps them per clip). reference: compute what
    Video-Infinity's code computes (zero halos at the video's ends, per-rank GroupNorm, its global frames and key
    counts; models/clip_parallel.py), to reproduce its videos; needs sync_group_norm off, F >= 4 and 1 <= padding <= F.
    """

    frames_per_clip: int
    padding: int = 8
    global_frames: int = 16
    phases: tuple = (800.0, 10.0, 0.0, 800.0, 0.0, 10.0)
    token_num_scale: bool = False
    sync_group_norm: bool = True
    reference: bool = False

    def check(self) -> None:
        if self.frames_per_clip < 1:
            raise ValueError(f"frames per clip must be at least 1, got {self.frames_per_clip}")
        if self.padding < 0 or self.global_frames < 0:
            raise ValueError(f"padding ({self.padding}) and global frames ({self.global_frames}) cannot be negative")
        if len(self.phases) != 6:
            raise ValueError(f"phases must hold 6 numbers (t, local bias, global bias for each phase), got {self.phases}")
        if self.reference:
            if self.sync_group_norm:
                raise ValueError("reference mode keeps GroupNorm statistics per rank, as Video-Infinity: set sync_group_norm off")
            if self.frames_per_clip < 4:
                raise ValueError(f"reference mode needs at least 4 frames per clip (Video-Infinity's conv halo), got {self.frames_per_clip}")
            if not 1 <= self.padding <= self.frames_per_clip:
                raise ValueError(f"reference mode needs 1 <= padding <= frames per clip ({self.frames_per_clip}), got padding "
                                 f"{self.padding}: Video-Infinity's code fails otherwise")

    def scope(self) -> DualScopeAttention:
        lt, ll, lg, gt, gl, gg = (float(v) for v in self.phases)
        return DualScopeAttention(
            padding=self.padding, global_frames=self.global_frames, local_phase_t=lt, local_phase_local_bias=ll,
            local_phase_global_bias=lg, global_phase_t=gt, global_phase_local_bias=gl, global_phase_global_bias=gg,
            token_num_scale=self.token_num_scale,
        )


def rank_share(items: int, rank: int, world_size: int) -> range:
    """The items (segments of a level, windows of a step) rank `rank` of `world_size` takes: a contiguous block, the
    blocks of all ranks as even as whole items allow."""
    return range(rank * items // world_size, (rank + 1) * items // world_size)


def clip_seed(seed: int, clip: int) -> int:
    """The noise seed of clip `clip`: `seed` for clip 0, an unrelated seed derived from (seed, clip) for the others."""
    if clip == 0:
        return int(seed)
    digest = hashlib.sha256(f"longvideo-clip:{seed}:{clip}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def clip_prompt_index(clip: int, clips: int, prompts: int) -> int:
    """Which of `prompts` prompts clip `clip` of `clips` uses (Video-Infinity's rule: floor(clip * prompts / clips))."""
    return clip * prompts // clips


@dataclass
class ClipResult:
    latents: torch.Tensor  # [B, C, F, H, W], float32, CPU
    timesteps: list[float] = field(default_factory=list)
    bytes_received: int = 0


def sample_clip(
    denoiser, comm: Communicator, settings: ClipParallelSettings, guidance: TextGuidance, *, size: tuple[int, int, int],
    steps: int, seed: int, scheduler: str = "ddim", device=None, callback=None,
) -> ClipResult:
    """Sample this rank's clip with the one denoising loop. `denoiser` is a UNet3DDenoiser already inside
    `clip_parallel_hooks(denoiser.unet)`; `size` is (batch, latent height, latent width); `seed` the video's seed."""
    batch, height, width = size
    clip = ClipDenoiser(denoiser, comm, settings.scope(), settings.sync_group_norm, device, settings.reference)
    latents = denoise(
        clip, guidance, (batch, denoiser.latent_channels, settings.frames_per_clip, height, width), steps=steps,
        seed=clip_seed(seed, comm.rank), scheduler=scheduler, callback=callback,
    )
    return ClipResult(latents, clip.timesteps, comm.bytes_received)


class ClipRankError(RuntimeError):
    """A rank of a run split over ranks failed; `rank` names it."""

    what = "clip-parallel"

    def __init__(self, rank: int, message: str):
        super().__init__(f"{self.what} rank {rank} failed: {message}")
        self.rank = rank


def sample_virtual(
    denoiser, prompts: list[TextGuidance], settings: ClipParallelSettings, ranks: int, *, size: tuple[int, int, int],
    steps: int, seed: int, scheduler: str = "ddim", on_step: Callable[[int, int], None] | None = None,
) -> list[ClipResult]:
    """All R clips in this process, one thread per virtual rank sharing the model on its device.

    `on_step(step, total)` runs in the calling thread after rank 0's steps; when it raises (a cancel), every rank
    stops at its next exchange and the exception propagates. A failing rank stops the others the same way and
    raises ClipRankError naming it.
    """
    settings.check()
    if ranks < 1:
        raise ValueError(f"the number of virtual ranks must be at least 1, got {ranks}")
    device = denoiser.load()
    group = VirtualGroup(ranks)
    results: list[ClipResult | None] = [None] * ranks
    failures: dict[int, BaseException] = {}
    steps_done: queue.Queue = queue.Queue()

    def run(rank: int) -> None:
        prompt = prompts[clip_prompt_index(rank, ranks, len(prompts))]
        report = (lambda step, total, _: steps_done.put((step, total))) if rank == 0 else None
        try:
            results[rank] = sample_clip(denoiser, group.communicator(rank, device), settings, prompt, size=size, steps=steps,
                                        seed=seed, scheduler=scheduler, device=device, callback=report)
        except BaseException as error:  # handed to the calling thread, which re-raises it
            failures[rank] = error
            group.abort()
        finally:
            steps_done.put(None)

    threads = [threading.Thread(target=run, args=(rank,), name=f"longvideo-clip-{rank}", daemon=True) for rank in range(ranks)]
    with clip_parallel_hooks(denoiser.unet):
        for thread in threads:
            thread.start()
        try:
            finished = 0
            while finished < ranks:
                event = steps_done.get()
                if event is None:
                    finished += 1
                elif on_step is not None:
                    on_step(*event)
        except BaseException:
            group.abort()
            raise
        finally:
            for thread in threads:
                thread.join()
    if failures:
        rank = min(failures, key=lambda r: (isinstance(failures[r], RanksStopped), r))
        raise ClipRankError(rank, f"{type(failures[rank]).__name__}: {failures[rank]}") from failures[rank]
    return results


def join_clips(results: list[ClipResult]) -> torch.Tensor:
    """The video's latents [B, C, R * F, H, W]: the clips in rank order."""
    return torch.cat([result.latents for result in results], dim=2)
