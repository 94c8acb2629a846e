"""Co-denoised windows inside ComfyUI's own sampling: a context handler (model_options["context_handler"], the hook
ComfyUI's own context windows use: comfy/context_windows.py) that runs every model call of a run as the co-denoising
windows of sampling/co_denoise.py.

At every step each window of frames gets the prompt of its stretch of the timeline and the model's clean estimates
(ComfyUI's model calls return them) are cross-faded over the overlaps with the pack's window weights; the noisiest
steps instead run one layout window spread over the whole video, whose estimates are mixed along time for the frames
between. ComfyUI's own code cuts the conditioning to each window (IndexListContextHandler.get_resized_cond: concat
latents and masks laid along the frames), so every sampler, schedule, LoRA, patch and wrapper of the run still applies.

Prompts along the timeline reach the handler as one positive CONDITIONING holding every prompt's entries, each tagged
with its place on the timeline (WINDOW_PROMPT); a window keeps only its own prompt's entries.

Window positions: 'relative' runs every window as a clip of its own (frame 0 to F - 1), as ComfyUI's context windows
do; 'absolute' gives a window its frames' place in the video in the model's rotary position encoding (Wan: the
window's first frame as RoPE's starting frame), so windows agree on where in time they are. Models whose frame
positions cannot be offset (LTX-Video, HunyuanVideo) refuse 'absolute' by name.

Ranks (`comm`, sampling/distributed.py): each rank runs its share of the windows and the cross-faded sums are added
up over the ranks, so all ranks step the same video; the layout window's one call is rank 0's.

Every `comfy` import is inside a function.
"""

from contextlib import contextmanager

import torch

from ..sampling.context_windows import window_starts, window_weights
from ..sampling.distributed import rank_share
from ..sampling.frame_conditioning import blend_along_time
from .denoiser import KnownFrames

WINDOW_PROMPT = "longvideo_timeline_prompt"


def check_positions(positions: str, patcher, name: str) -> None:
    """Refuse 'absolute' window positions on a model whose frame positions cannot be offset."""
    if positions == "absolute" and not hasattr(patcher.get_model_object("diffusion_model"), "rope_encode"):
        raise ValueError(f"window positions 'absolute' set a window's rotary frame positions, which {name} does not "
                         "expose: use 'relative'")


def tagged_positive(prompts) -> list:
    """One positive CONDITIONING holding every timeline prompt's entries, each tagged with its index."""
    entries = []
    for index, prompt in enumerate(prompts):
        natives = prompt.native_positive
        own = natives[0].entries if natives is not None else [[prompt.positive, {}]]
        entries += [[tokens, {**extras, WINDOW_PROMPT: index}] for tokens, extras in own]
    return entries


class WindowHandler:
    """ComfyUI's context-handler interface (should_use_context, execute) running co-denoising's windows; `plan` is
    sampling/co_denoise.py's WindowPlan."""

    def __init__(self, plan):
        import comfy.context_windows

        self.plan = plan
        # ComfyUI's own conditioning cutter; its schedule and fuse method are not used.
        self.cutter = comfy.context_windows.IndexListContextHandler(None, None, dim=2)

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        return True

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        plan, frames = self.plan, x_in.shape[2]
        sigmas = model_options["transformer_options"]["sample_sigmas"]
        step = int(torch.nonzero(torch.isclose(sigmas, timestep[:1].to(sigmas), rtol=1e-4))[0].item())
        if step < plan.layout_steps and frames > plan.frames_per_window:
            return self._layout(calc_cond_batch, model, conds, x_in, timestep, model_options)
        starts = window_starts(frames, plan.frames_per_window, plan.overlap)
        mine = range(len(starts)) if plan.comm is None else rank_share(len(starts), plan.comm.rank, plan.comm.world_size)
        sums = [torch.zeros_like(x_in) for _ in conds]
        weight_sum = torch.zeros(frames, device=x_in.device, dtype=x_in.dtype)
        for number in mine:
            import comfy.model_management

            comfy.model_management.throw_exception_if_processing_interrupted()
            start, stop = starts[number], min(starts[number] + plan.frames_per_window, frames)
            window = list(range(start, stop))
            prompt = plan.window_prompt(start, stop)
            with self._position(model, start if plan.positions == "absolute" else 0):
                outs = calc_cond_batch(model, self._cut(conds, x_in, window, prompt), x_in[:, :, start:stop], timestep,
                                       model_options)
            before = starts[number - 1] + plan.frames_per_window - start if number else 0
            after = stop - starts[number + 1] if number + 1 < len(starts) else 0
            weights = window_weights(stop - start, before, after).to(x_in.device, x_in.dtype)
            for total, out in zip(sums, outs):
                total[:, :, start:stop] += out * weights[:, None, None]
            weight_sum[start:stop] += weights
        if plan.comm is not None and plan.comm.world_size > 1:
            sums = [plan.comm.all_reduce_sum(total) for total in sums]
            weight_sum = plan.comm.all_reduce_sum(weight_sum)
        return [total / weight_sum[:, None, None] for total in sums]

    def _layout(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        """One model call on the layout frames (spread over the whole video, the prompt of its middle); every other
        frame's clean estimate is the linear mix of the layout frames' before and after it."""
        plan = self.plan
        layout = plan.layout_frames()
        comm = plan.comm
        if comm is None or comm.rank == 0:
            outs = calc_cond_batch(model, self._cut(conds, x_in, layout, plan.window_prompt(0, plan.frames)),
                                   x_in[:, :, layout], timestep, model_options)
        else:
            outs = [torch.zeros_like(x_in[:, :, layout]) for _ in conds]
        if comm is not None and comm.world_size > 1:
            outs = [comm.all_reduce_sum(out) for out in outs]
        return [blend_along_time(KnownFrames(layout, out.float().cpu()), x_in.shape).to(x_in) for out in outs]

    def _cut(self, conds, x_in, frames: list[int], prompt: int) -> list:
        """The run's conditionings for a window over `frames`: the positive one's entries of prompt `prompt` only,
        everything laid along the frames cut to them by ComfyUI's own code."""
        import comfy.context_windows

        window = comfy.context_windows.IndexListContextWindow(frames, dim=2)
        cut = []
        for number, cond in enumerate(conds):
            if cond is not None and number == 0:
                cond = [entry for entry in cond if entry.get(WINDOW_PROMPT, prompt) == prompt]
            cut.append(self.cutter.get_resized_cond(cond, x_in, window))
        return cut

    @staticmethod
    @contextmanager
    def _position(model, first_frame: int):
        """The model's rotary frame positions starting at `first_frame` while a window runs (Wan's rope_encode)."""
        network = model.diffusion_model
        if not first_frame:
            yield
            return
        original = network.rope_encode
        network.rope_encode = lambda t, h, w, t_start=0, **options: original(t, h, w, t_start=t_start + first_frame, **options)
        try:
            yield
        finally:
            del network.rope_encode
