"""ComfyUI node classes: thin wrappers that check inputs, call sampling/ and wrap results in ComfyUI types."""

from .attention import LongVideoTemporalAttention
from .conditioning import LongVideoTextEncode
from .continuation import LongVideoContinuationSampler, LongVideoPromptSchedule
from .distributed import LongVideoDistributedSampler
from .latents import LongVideoDecode, LongVideoEmptyLatent, LongVideoEncode
from .loaders import LongVideoModelLoader
from .sampler import LongVideoSampler
from .video import LongVideoSaveVideo

NODE_CLASS_MAPPINGS = {
    "LongVideoModelLoader": LongVideoModelLoader,
    "LongVideoTextEncode": LongVideoTextEncode,
    "LongVideoEmptyLatent": LongVideoEmptyLatent,
    "LongVideoSampler": LongVideoSampler,
    "LongVideoDecode": LongVideoDecode,
    "LongVideoEncode": LongVideoEncode,
    "LongVideoSaveVideo": LongVideoSaveVideo,
    "LongVideoTemporalAttention": LongVideoTemporalAttention,
    "LongVideoContinuationSampler": LongVideoContinuationSampler,
    "LongVideoPromptSchedule": LongVideoPromptSchedule,
    "LongVideoDistributedSampler": LongVideoDistributedSampler,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LongVideoModelLoader": "LongVideo Model Loader",
    "LongVideoTextEncode": "LongVideo Text Encode",
    "LongVideoEmptyLatent": "LongVideo Empty Latent",
    "LongVideoSampler": "LongVideo Sampler",
    "LongVideoDecode": "LongVideo Decode",
    "LongVideoEncode": "LongVideo Encode",
    "LongVideoSaveVideo": "LongVideo Save Video",
    "LongVideoTemporalAttention": "LongVideo Temporal Attention",
    "LongVideoContinuationSampler": "LongVideo Continuation Sampler",
    "LongVideoPromptSchedule": "LongVideo Prompt Schedule",
    "LongVideoDistributedSampler": "LongVideo Distributed Sampler (Video-Infinity)",
}
