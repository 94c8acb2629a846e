"""Pixel-space frame interpolation with dense optical flow (OpenCV), and plain linear blending as the baseline.

For every pair of neighbouring frames A, B and every in-between time t = i / k:

1. Flow both ways, A -> B and B -> A (DIS or Farneback), on the pair's principal colour component: the grey level
   where colours differ mostly in brightness, but a green shape on a grey ground that has the same brightness
   still stands out.
2. Flow at time t by forward splatting (Baker et al. 2011, "A Database and Evaluation Methodology for Optical
   Flow", section 4): every pixel of A moves by t * flow(A -> B), every pixel of B by (1 - t) * flow(B -> A); where
   several land on one pixel, the one whose flow is most photo-consistent (smallest |A(p) - B(p + flow)|) wins,
   so a moving object covers the background it passes over. Pixels nothing lands on take the flow of their
   neighbourhood.
3. Both frames are warped to time t along that flow, and blended occlusion-aware: a frame counts only where its
   own flow agrees with the flow at time t (forward-backward consistency), so regions that only one frame shows
   come from that frame; elsewhere the blend weights are 1 - t and t.

Frames at multiples of k are the input frames, unchanged. The output is allocated once; pairs are processed one
after another (`on_pair` after each: progress and cancellation).
"""

from collections.abc import Callable

import cv2
import numpy as np
import torch

METHODS = ("dis", "farneback", "linear")
CONSISTENCY_PIXELS = 1.0
MIN_FLOW_SIZE = 16


def interpolated_frame_count(frames: int, factor: int) -> int:
    return (frames - 1) * factor + 1


def interpolate_frames(
    frames: torch.Tensor,
    factor: int,
    method: str = "dis",
    out: torch.Tensor | None = None,
    on_pair: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """frames [N, H, W, C] float in 0..1 (C >= 3; flow is computed on the first 3) -> [(N - 1) * factor + 1, H, W, C]
    float32 with frame i at i * factor. `out` may be a preallocated result tensor."""
    if method not in METHODS:
        raise ValueError(f"method '{method}' is unknown: choose one of {', '.join(METHODS)}")
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    if frames.dim() != 4 or frames.shape[0] < 1 or frames.shape[-1] < 3:
        raise ValueError(f"frames must be [frames, height, width, channels >= 3], got {tuple(frames.shape)}")
    count, height, width, channels = frames.shape
    shape = (interpolated_frame_count(count, factor), height, width, channels)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}; expected {shape}")
    interpolator = PairInterpolator(method)
    times = [i / factor for i in range(1, factor)]
    previous = frames[0].float().cpu().numpy()
    out[0] = frames[0]
    for pair in range(count - 1):
        following = frames[pair + 1].float().cpu().numpy()
        for i, frame in enumerate(interpolator(previous, following, times), start=1):
            out[pair * factor + i] = torch.from_numpy(frame)
        out[(pair + 1) * factor] = frames[pair + 1]
        previous = following
        if on_pair is not None:
            on_pair(pair)
    return out


class PairInterpolator:
    """Frames between two frames a, b ([H, W, C] float32 in 0..1) at times in (0, 1)."""

    def __init__(self, method: str):
        self.method = method
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, a: np.ndarray, b: np.ndarray, times: list[float]) -> list[np.ndarray]:
        if self.method == "linear":
            return [((1 - t) * a + t * b).astype(np.float32) for t in times]
        a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
        guide_a, guide_b = principal_component_pair(a[..., :3], b[..., :3])
        flow_ab, flow_ba = self.flow(guide_a, guide_b), self.flow(guide_b, guide_a)
        cost_a = np.abs(a[..., :3] - warp(b[..., :3], flow_ab)).sum(axis=-1)
        cost_b = np.abs(b[..., :3] - warp(a[..., :3], flow_ba)).sum(axis=-1)
        return [blend_at(a, b, flow_ab, flow_ba, flow_at(flow_ab, flow_ba, cost_a, cost_b, t), t) for t in times]

    def flow(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Dense flow [H, W, 2] (x, y) such that source(p) ~ target(p + flow(p))."""
        height, width = source.shape
        # DIS needs frames of at least 12 pixels on one side: tiny frames are padded (edges repeated) and cropped back.
        pad_y, pad_x = max(0, MIN_FLOW_SIZE - height), max(0, MIN_FLOW_SIZE - width)
        if pad_y or pad_x:
            source, target = (cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE) for image in (source, target))
        if self.method == "dis":
            flow = self._dis.calc(source, target, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(source, target, None, pyr_scale=0.5, levels=3, winsize=9, iterations=5,
                                                poly_n=5, poly_sigma=1.1, flags=0)
        return flow[:height, :width]


def principal_component_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both RGB frames projected on the pair's principal colour axis, as uint8 (same mapping for both)."""
    pixels = np.concatenate([a.reshape(-1, 3), b.reshape(-1, 3)]).astype(np.float64)
    centred = pixels - pixels.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axis = vectors[:, -1] * (1 if vectors[:, -1].sum() >= 0 else -1)
    projected = centred @ axis
    low, high = projected.min(), projected.max()
    scale = 255.0 / (high - low) if high - low > 1e-6 else 0.0
    guide = np.clip((projected - low) * scale, 0, 255).astype(np.uint8)
    return guide[: a.shape[0] * a.shape[1]].reshape(a.shape[:2]), guide[a.shape[0] * a.shape[1] :].reshape(b.shape[:2])


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image sampled at p + flow(p) (bilinear, edges repeated)."""
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flow_at(flow_ab: np.ndarray, flow_ba: np.ndarray, cost_a: np.ndarray, cost_b: np.ndarray, t: float) -> np.ndarray:
    """The A -> B flow seen at time t [H, W, 2], by splatting both frames' flows and keeping the most consistent."""
    height, width = flow_ab.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    landing_x = np.concatenate([(xs + t * flow_ab[..., 0]).ravel(), (xs + (1 - t) * flow_ba[..., 0]).ravel()])
    landing_y = np.concatenate([(ys + t * flow_ab[..., 1]).ravel(), (ys + (1 - t) * flow_ba[..., 1]).ravel()])
    values = np.concatenate([flow_ab.reshape(-1, 2), -flow_ba.reshape(-1, 2)])
    costs = np.concatenate([cost_a.ravel(), cost_b.ravel()])
    # Each moved pixel covers the four pixels around where it lands.
    targets, sources = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            x = np.floor(landing_x).astype(np.int64) + dx
            y = np.floor(landing_y).astype(np.int64) + dy
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            targets.append((y * width + x)[inside])
            sources.append(np.nonzero(inside)[0])
    targets, sources = np.concatenate(targets), np.concatenate(sources)
    best = np.full(height * width, np.inf, np.float32)
    np.minimum.at(best, targets, costs[sources])
    winners = costs[sources] == best[targets]
    flow = np.zeros((height * width, 2), np.float32)
    filled = np.zeros(height * width, np.float32)
    flow[targets[winners]] = values[sources[winners]]
    filled[targets[winners]] = 1.0
    return fill_holes(flow.reshape(height, width, 2), filled.reshape(height, width))


def fill_holes(flow: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Give pixels without a value (filled == 0) the average of their filled neighbourhood, widening it as needed."""
    if filled.all():
        return flow
    if not filled.any():
        return np.zeros_like(flow)
    result = flow.copy()
    size = 3
    while not filled.all():
        weight = cv2.blur(filled, (size, size), borderType=cv2.BORDER_REPLICATE)
        summed = cv2.blur(flow * filled[..., None], (size, size), borderType=cv2.BORDER_REPLICATE)
        reached = (filled == 0) & (weight > 0)
        result[reached] = summed[reached] / weight[reached][:, None]
        filled = np.where(reached, 1.0, filled).astype(np.float32)
        flow = result
        size = min(size * 2 + 1, 2 * max(flow.shape[:2]) + 1)
    return result


def blend_at(a, b, flow_ab, flow_ba, flow_t, t: float) -> np.ndarray:
    """Frames a and b warped to time t along flow_t, blended by how well each one's own flow agrees there."""
    from_a, from_b = -t * flow_t, (1 - t) * flow_t
    warped_a, warped_b = warp(a, from_a), warp(b, from_b)
    if warped_a.ndim == 2:
        warped_a, warped_b = warped_a[..., None], warped_b[..., None]
    disagreement_a = np.linalg.norm(warp(flow_ab, from_a) - flow_t, axis=-1)
    disagreement_b = np.linalg.norm(warp(flow_ba, from_b) + flow_t, axis=-1)
    weight_a = (1 - t) * (np.exp(-((disagreement_a / CONSISTENCY_PIXELS) ** 2)) + 1e-3)
    weight_b = t * (np.exp(-((disagreement_b / CONSISTENCY_PIXELS) ** 2)) + 1e-3)
    blended = (weight_a[..., None] * warped_a + weight_b[..., None] * warped_b) / (weight_a + weight_b)[..., None]
    return np.clip(blended, 0.0, 1.0).astype(np.float32)
