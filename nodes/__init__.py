"""ComfyUI node classes: thin wrappers that check inputs, call sampling/ and wrap results in ComfyUI types."""

from .attention import LongVideoTemporalAttention
from .co_denoise import LongVideoCoDenoiseSampler
from .comfy_models import LongVideoComfyModel, LongVideoComfyPromptSchedule, LongVideoShapesWanLoader
from .conditioning import LongVideoTextEncode
from .context_windows import LongVideoContextWindows
from .continuation import LongVideoContinuationSampler, LongVideoPromptSchedule
from .interpolation import LongVideoFlowInterpolate, LongVideoLatentInterpolate
from .hierarchy import LongVideoHierarchicalSampler, LongVideoInfiNetLoader
from .distributed import LongVideoDistributedSampler
from .latents import LongVideoDecode, LongVideoEmptyLatent, LongVideoEncode, LongVideoLoadLatent
from .loaders import LongVideoModelLoader
from .report import LongVideoColourMatch, LongVideoReport
from .sampler import LongVideoSampler
from .upscale import LongVideoLatentUpscale, LongVideoLatentUpscaleModelLoader
from .vdp import LongVideoVDPCondition, LongVideoVDPLoader
from .video import LongVideoSaveVideo

NODE_CLASS_MAPPINGS = {
    "LongVideoModelLoader": LongVideoModelLoader,
    "LongVideoTextEncode": LongVideoTextEncode,
    "LongVideoEmptyLatent": LongVideoEmptyLatent,
    "LongVideoSampler": LongVideoSampler,
    "LongVideoDecode": LongVideoDecode,
    "LongVideoEncode": LongVideoEncode,
    "LongVideoLoadLatent": LongVideoLoadLatent,
    "LongVideoSaveVideo": LongVideoSaveVideo,
    "LongVideoTemporalAttention": LongVideoTemporalAttention,
    "LongVideoContinuationSampler": LongVideoContinuationSampler,
    "LongVideoCoDenoiseSampler": LongVideoCoDenoiseSampler,
    "LongVideoPromptSchedule": LongVideoPromptSchedule,
    "LongVideoLatentInterpolate": LongVideoLatentInterpolate,
    "LongVideoFlowInterpolate": LongVideoFlowInterpolate,
    "LongVideoInfiNetLoader": LongVideoInfiNetLoader,
    "LongVideoHierarchicalSampler": LongVideoHierarchicalSampler,
    "LongVideoLatentUpscale": LongVideoLatentUpscale,
    "LongVideoLatentUpscaleModelLoader": LongVideoLatentUpscaleModelLoader,
    "LongVideoContextWindows": LongVideoContextWindows,
    "LongVideoVDPLoader": LongVideoVDPLoader,
    "LongVideoVDPCondition": LongVideoVDPCondition,
    "LongVideoDistributedSampler": LongVideoDistributedSampler,
    "LongVideoComfyModel": LongVideoComfyModel,
    "LongVideoComfyPromptSchedule": LongVideoComfyPromptSchedule,
    "LongVideoShapesWanLoader": LongVideoShapesWanLoader,
    "LongVideoReport": LongVideoReport,
    "LongVideoColourMatch": LongVideoColourMatch,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LongVideoModelLoader": "LongVideo Model Loader",
    "LongVideoTextEncode": "LongVideo Text Encode",
    "LongVideoEmptyLatent": "LongVideo Empty Latent",
    "LongVideoSampler": "LongVideo Sampler",
    "LongVideoDecode": "LongVideo Decode",
    "LongVideoEncode": "LongVideo Encode",
    "LongVideoLoadLatent": "LongVideo Load Latent (resume)",
    "LongVideoSaveVideo": "LongVideo Save Video",
    "LongVideoTemporalAttention": "LongVideo Temporal Attention",
    "LongVideoContinuationSampler": "LongVideo Continuation Sampler",
    "LongVideoCoDenoiseSampler": "LongVideo Co-Denoise Sampler (overlapping windows)",
    "LongVideoPromptSchedule": "LongVideo Prompt Schedule",
    "LongVideoLatentInterpolate": "LongVideo Latent Interpolate",
    "LongVideoFlowInterpolate": "LongVideo Flow Interpolate",
    "LongVideoInfiNetLoader": "LongVideo InfiNet Loader",
    "LongVideoHierarchicalSampler": "LongVideo Hierarchical Sampler",
    "LongVideoLatentUpscale": "LongVideo Latent Upscale",
    "LongVideoLatentUpscaleModelLoader": "LongVideo Latent Upscale Model Loader",
    "LongVideoContextWindows": "LongVideo Context Windows",
    "LongVideoVDPLoader": "LongVideo VDP Loader (video-diffusion-pytorch)",
    "LongVideoVDPCondition": "LongVideo VDP Condition",
    "LongVideoDistributedSampler": "LongVideo Distributed Sampler (Video-Infinity)",
    "LongVideoComfyModel": "LongVideo ComfyUI Model (Wan, LTX-Video, HunyuanVideo)",
    "LongVideoComfyPromptSchedule": "LongVideo Prompt Schedule (ComfyUI CLIP)",
    "LongVideoShapesWanLoader": "LongVideo Shapes Wan Loader (the pack's Wan-class model)",
    "LongVideoReport": "LongVideo Report (seams and drift)",
    "LongVideoColourMatch": "LongVideo Colour Match (chunk joins)",
}
