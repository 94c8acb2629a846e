from ..sampling.context_windows import WindowedDenoiser
from .common import MODEL_PATCHES, MODEL, NodeInputError, check_numbers, check_overlap, graph_check, refuse_comfy_model


class LongVideoContextWindows:
    DESCRIPTION = (
        "Makes the model see at most frames_per_window frames per call: at every step it runs on overlapping windows "
        "and the predictions are cross-faded, so memory stays bounded however long the video is. Use it for the refine "
        "pass after LongVideoLatentUpscale (LongVideoSampler at denoise < 1) and for any long sampling. "
        "Returns a new model; the input model is unchanged."
    )
    CATEGORY = MODEL_PATCHES
    FUNCTION = "patch"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model, sampling in overlapping windows of frames, for LongVideoSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model from LongVideoModelLoader (or LongVideoTemporalAttention)."}),
                "frames_per_window": ("INT", {"default": 16, "min": 1, "max": 1024,
                                              "tooltip": "Frames the model sees at once: the model's training length (16 for ModelScope, 24 for Zeroscope v2)."}),
                "overlap": ("INT", {"default": 4, "min": 0, "max": 1023,
                                    "tooltip": "Frames shared by neighbouring windows, cross-faded; more overlap, smoother joins, more model calls."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, frames_per_window=None, overlap=None):
        return graph_check(cls, locals(), lambda frames_per_window, overlap: check_overlap(cls.__name__, frames_per_window, overlap))

    def patch(self, model, frames_per_window, overlap):
        check_numbers(self, locals())
        node = "LongVideoContextWindows"
        refuse_comfy_model(node, model, "ComfyUI's own sampler runs it, which these windows cannot step: put "
                           "ComfyUI's Context Windows (Manual) node (dim 2, the frames; WAN Context Windows (Manual) "
                           "for Wan) on the MODEL before LongVideoComfyModel instead")
        if frames_per_window < 1:
            raise NodeInputError(f"{node}: frames_per_window must be at least 1, got {frames_per_window}")
        if not 0 <= overlap < frames_per_window:
            raise NodeInputError(
                f"{node}: overlap {overlap} must be at least 0 and below frames_per_window ({frames_per_window}): "
                f"use at most {frames_per_window - 1}"
            )
        return (WindowedDenoiser(model, frames_per_window, overlap),)
