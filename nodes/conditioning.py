from .common import CONDITIONING, CLIP


class LongVideoTextEncode:
    DESCRIPTION = "Encodes a prompt with the model's CLIP text encoder into ComfyUI CONDITIONING."
    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Text conditioning for the LongVideo samplers (ComfyUI's own format).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (CLIP, {"tooltip": "The text encoder from LongVideoModelLoader."}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "What the video shows."}),
            }
        }

    def encode(self, clip, text):
        tokens, pooled = clip.encode([text])
        return ([[tokens, {"pooled_output": pooled}]],)
