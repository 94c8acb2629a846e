"""Write a tiny random text-to-video model (diffusers folder, ~1 MB) for trying the pack without real weights.

    python tools/make_tiny_model.py [--out weights/tiny-random-t2v] [--seed 0]

Its weights are random, so it makes noise: it shows that the graph runs end to end, not what a video
looks like. Real models (Zeroscope v2, ModelScope 1.7b) go under ComfyUI's models/diffusers.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from tiny_models import save_tiny_text_to_video  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "weights", "tiny-random-t2v"), help="the folder to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    print(save_tiny_text_to_video(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
