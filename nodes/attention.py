from ..attention.temporal import DualScopeAttention, FullAttention, WindowAttention
from .common import MODEL_PATCHES, MODEL, NodeInputError, check_numbers, refuse_comfy_model

MODES = ("full", "window", "dual_scope")


class LongVideoTemporalAttention:
    DESCRIPTION = (
        "Sets how the model's temporal attention sees other frames. full: every frame (cost grows with frames "
        "squared). window: +-window/2 frames, plus anchors; time and memory grow linearly, for long videos and "
        "interpolation. dual_scope: Video-Infinity's local window plus a global frame set with timestep-switched "
        "biases. Returns a new model; the input model is unchanged."
    )
    CATEGORY = MODEL_PATCHES
    FUNCTION = "patch"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model with this temporal attention, for any LongVideo sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        def phase_t(default, text):
            return ("FLOAT", {"default": default, "min": 0.0, "max": 1000.0, "step": 1.0, "tooltip": text})

        def bias(default, text):
            return ("FLOAT", {"default": default, "min": -100.0, "max": 100.0, "step": 0.5, "tooltip": text})

        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model from LongVideoModelLoader."}),
                "mode": (list(MODES), {"default": "window", "tooltip": "full, window or dual_scope (see the node description)."}),
                "window": ("INT", {"default": 5, "min": 1, "max": 1025, "step": 2,
                                   "tooltip": "window mode only (ignored by full and dual_scope): frames each frame sees, itself in the middle (5 = +-2)."}),
                "anchor_first": ("BOOLEAN", {"default": False, "tooltip": "window mode only (ignored by full and dual_scope): every frame also sees frame 0."}),
                "anchor_frames": ("STRING", {"default": "", "tooltip": "window mode only (ignored by full and dual_scope): frame indices always visible, e.g. '0, 16, 32' (keyframes)."}),
                "padding": ("INT", {"default": 8, "min": 0, "max": 1024,
                                    "tooltip": "dual_scope mode only (ignored by full and window): local frames on each side of a frame."}),
                "global_frames": ("INT", {"default": 16, "min": 0, "max": 1024,
                                          "tooltip": "dual_scope mode only (ignored by full and window): frames at a fixed stride over the whole video seen by every frame."}),
                "local_phase_t": phase_t(800.0, "dual_scope mode only (ignored by full and window): below this timestep the local-phase biases apply."),
                "local_phase_local_bias": bias(10.0, "dual_scope mode only (ignored by full and window): local-key bias below local_phase_t."),
                "local_phase_global_bias": bias(0.0, "dual_scope mode only (ignored by full and window): global-key bias below local_phase_t."),
                "global_phase_t": phase_t(800.0, "dual_scope mode only (ignored by full and window): at or above this timestep the global-phase biases apply."),
                "global_phase_local_bias": bias(0.0, "dual_scope mode only (ignored by full and window): local-key bias at or above global_phase_t."),
                "global_phase_global_bias": bias(10.0, "dual_scope mode only (ignored by full and window): global-key bias at or above global_phase_t."),
                "token_num_scale": ("BOOLEAN", {"default": False,
                                                "tooltip": "dual_scope mode only (ignored by full and window): scale logits by log16 of the visible key count (for large padding + global_frames)."}),
            }
        }

    def patch(self, model, mode, window=5, anchor_first=False, anchor_frames="", padding=8, global_frames=16,
              local_phase_t=800.0, local_phase_local_bias=10.0, local_phase_global_bias=0.0, global_phase_t=800.0,
              global_phase_local_bias=0.0, global_phase_global_bias=10.0, token_num_scale=False):
        check_numbers(self, locals())
        refuse_comfy_model("LongVideoTemporalAttention", model, "ComfyUI's models have no temporal attention layers "
                           "this node can replace (their attention spans space and time at once): connect the model "
                           "straight to the LongVideo sampler, or bound the frames it sees with ComfyUI's Context "
                           "Windows (Manual) node on the MODEL before LongVideoComfyModel")
        if mode == "full":
            scope = FullAttention()
        elif mode == "window":
            if window < 1:
                raise NodeInputError(f"LongVideoTemporalAttention: window must be at least 1, got {window}")
            scope = WindowAttention(window=window, anchor_first=anchor_first, anchor_frames=parse_frame_list(anchor_frames))
        elif mode == "dual_scope":
            scope = DualScopeAttention(
                padding=padding, global_frames=global_frames, local_phase_t=local_phase_t,
                local_phase_local_bias=local_phase_local_bias, local_phase_global_bias=local_phase_global_bias,
                global_phase_t=global_phase_t, global_phase_local_bias=global_phase_local_bias,
                global_phase_global_bias=global_phase_global_bias, token_num_scale=token_num_scale,
            )
        else:
            raise NodeInputError(f"LongVideoTemporalAttention: mode '{mode}' is unknown: choose one of {', '.join(MODES)}")
        return (model.with_temporal_attention(scope),)


def parse_frame_list(text: str) -> tuple[int, ...]:
    """'0, 16 32' -> (0, 16, 32)."""
    parts = text.replace(",", " ").split()
    try:
        frames = tuple(int(part) for part in parts)
    except ValueError:
        raise NodeInputError(
            f"LongVideoTemporalAttention: anchor_frames '{text}' must be frame numbers separated by commas, e.g. '0, 16, 32'"
        ) from None
    if any(frame < 0 for frame in frames):
        raise NodeInputError(f"LongVideoTemporalAttention: anchor_frames '{text}' has a negative frame number")
    return frames
