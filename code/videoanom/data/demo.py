"""Synthetic demo camera locations: a static surveillance-like scene with walking people.

Two writers share one scene generator:

* :func:`write_demo_datastore` writes locations in the project's datastore layout::

      <root>/<location>/train/<clip>/frame_0001.png ...   (a clip as a folder of frames)
      <root>/<location>/train/<clip>.avi                  (or a clip as one video file)
      <root>/<location>/test/...                          (same forms)
      <root>/<location>/test/labels.csv                   (clip,start_frame,end_frame,kind)

* :func:`write_ucsd_style_location` writes one location in the UCSD Anomaly Dataset layout
  (greyscale TIFF frames, ``TestNNN_gt`` pixel masks and a ``<name>.m`` ground-truth file).

Each location has a static textured background (ground, one or two walkways, a few static
structures), small pedestrians walking along the walkways, per-pixel camera noise and a tiny
brightness flicker. Test clips may contain one anomaly event: a fast object (cyclist or
skater) or a vehicle moving along a walkway, or a pedestrian crossing the grass
perpendicular to the walkways. Labels mark exactly the frames in which any pixel of the
anomalous object is inside the frame (1-based, inclusive).

Everything is deterministic for a seed: every clip draws from its own random stream.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = [
    "ANOMALY_KINDS",
    "LOCATION_NAMES",
    "UCSD_STREAM_INDEX",
    "RenderedClip",
    "Scene",
    "anomaly_kind_for_test_clip",
    "build_scene",
    "clip_file_form",
    "frames_to_intervals",
    "location_name",
    "render_clip",
    "write_demo_datastore",
    "write_ucsd_style_location",
]

logger = logging.getLogger(__name__)

ANOMALY_KINDS: tuple[str, ...] = ("fast_object", "vehicle", "wrong_way_crossing")
LOCATION_NAMES: tuple[str, ...] = ("demo-plaza", "demo-campus", "demo-station", "demo-park")
LABELS_HEADER: tuple[str, ...] = ("clip", "start_frame", "end_frame", "kind")

FPS = 10.0
MJPG_QUALITY = 95
_BASE_H, _BASE_W = 120, 160
_MIN_SIZE = 16

_SPLIT_CODES = {"train": 1, "test": 2}
_STREAM_SCENE, _STREAM_CLIP, _STREAM_NOISE = 11, 12, 13
# The UCSD-style writer renders clip ``ci`` of ``split`` as ``render_clip(build_scene(seed, 0,
# h, w), seed, split, ci, n, kind, location_index=UCSD_STREAM_INDEX)``.
UCSD_STREAM_INDEX = 1000

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels (x1, y1 exclusive edges)
RGB = tuple[float, float, float]

# ---------------------------------------------------------------------------------------------
# Palettes (RGB)
# ---------------------------------------------------------------------------------------------
_SHIRTS: tuple[RGB, ...] = (
    (196, 44, 44),
    (44, 74, 178),
    (222, 190, 46),
    (228, 228, 224),
    (34, 34, 38),
    (46, 140, 66),
    (228, 122, 34),
    (122, 54, 140),
    (122, 170, 220),
    (218, 120, 160),
    (128, 128, 132),
    (32, 128, 130),
)
_TROUSERS: tuple[RGB, ...] = (
    (30, 32, 52),
    (52, 52, 60),
    (68, 82, 112),
    (150, 132, 92),
    (24, 24, 26),
)
_SKIN: tuple[RGB, ...] = ((232, 192, 160), (204, 152, 112), (152, 102, 72), (96, 66, 46))
_HAIR: tuple[RGB, ...] = ((30, 22, 16), (70, 46, 26), (150, 110, 60), (180, 180, 176))
_VEHICLES: tuple[RGB, ...] = (
    (236, 236, 232),
    (186, 32, 30),
    (40, 66, 150),
    (176, 180, 186),
    (226, 186, 30),
)

# Location styles: ground colour, walkway colour, number of walkways, static structures.
_STYLES: tuple[dict, ...] = (
    {  # plaza: lawn, one wide paved walkway, planters, benches, lamp posts
        "ground": (92, 128, 64),
        "walkway": (178, 172, 160),
        "walkways": 1,
        "structures": {"planter": (2, 3), "bench": (1, 2), "lamp": (2, 3)},
    },
    {  # campus: lawn, two walkways, a building along the top, lamp posts
        "ground": (84, 120, 58),
        "walkway": (160, 158, 152),
        "walkways": 2,
        "structures": {"building": (1, 1), "lamp": (2, 4), "bench": (0, 1)},
    },
    {  # station: gravel, one walkway, station building, platform-like kerbs
        "ground": (124, 116, 100),
        "walkway": (186, 184, 178),
        "walkways": 1,
        "structures": {"building": (1, 1), "bench": (2, 3), "lamp": (1, 2)},
    },
    {  # park: lush grass, two walkways, trees, benches
        "ground": (70, 118, 52),
        "walkway": (170, 150, 118),
        "walkways": 2,
        "structures": {"tree": (3, 5), "bench": (1, 2)},
    },
)


# ---------------------------------------------------------------------------------------------
# Names and clip plans
# ---------------------------------------------------------------------------------------------
def location_name(index: int) -> str:
    """Deterministic name of the 0-based ``index``-th demo location."""
    if index < len(LOCATION_NAMES):
        return LOCATION_NAMES[index]
    return f"demo-site-{index + 1}"


def clip_name(split: str, clip_index: int) -> str:
    """``train_001``, ``test_002``, ... (``clip_index`` is 1-based)."""
    return f"{split}_{clip_index:03d}"


def anomaly_kind_for_test_clip(clip_index: int, *, first_is_normal: bool = True) -> str | None:
    """Anomaly kind of the 1-based test clip ``clip_index``.

    With ``first_is_normal`` (the datastore writer) clip 1 is normal and clips 2, 3, 4, ...
    cycle through :data:`ANOMALY_KINDS`; otherwise every clip has an anomaly (UCSD writer).
    """
    if first_is_normal:
        if clip_index == 1:
            return None
        return ANOMALY_KINDS[(clip_index - 2) % len(ANOMALY_KINDS)]
    return ANOMALY_KINDS[(clip_index - 1) % len(ANOMALY_KINDS)]


def clip_file_form(split: str, clip_index: int, n_clips: int) -> str:
    """How the 1-based clip is stored: ``"png"`` (frame folder), ``"avi"`` or ``"mp4"``.

    Every third clip is a video file; a split with 2 clips (too few for a third) stores its
    last clip as a video so that both forms appear. In ``test`` the first video clip is an
    ``.mp4`` (mp4v) and later ones ``.avi`` (MJPG); ``train`` videos are all ``.avi``.
    """
    if not _is_video_clip(clip_index, n_clips):
        return "png"
    if split == "test":
        first_video = next(i for i in range(1, n_clips + 1) if _is_video_clip(i, n_clips))
        if clip_index == first_video:
            return "mp4"
    return "avi"


def _is_video_clip(clip_index: int, n_clips: int) -> bool:
    if clip_index % 3 == 0:
        return True
    return n_clips == 2 and clip_index == 2


def frames_to_intervals(flags: Sequence[bool] | np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of true flags as 1-based inclusive ``(start, end)`` frame intervals."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i + 1
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(flags)))
    return out


# ---------------------------------------------------------------------------------------------
# Drawing primitives
# ---------------------------------------------------------------------------------------------
def _coverage(lo: float, hi: float, n: int) -> tuple[int, np.ndarray]:
    """Fractional coverage of pixel cells [c, c+1) by the interval [lo, hi), clipped to [0, n)."""
    i0 = max(0, math.floor(lo))
    i1 = min(n, math.ceil(hi))
    if i1 <= i0:
        return i0, np.zeros(0, dtype=np.float32)
    cells = np.arange(i0, i1, dtype=np.float64)
    cov = np.minimum(hi, cells + 1.0) - np.maximum(lo, cells)
    return i0, np.clip(cov, 0.0, 1.0).astype(np.float32)


def _paint_rect(
    canvas: np.ndarray,
    rect: Rect,
    colour: RGB | np.ndarray,
    *,
    alpha: float = 1.0,
    mask: np.ndarray | None = None,
) -> None:
    """Blend an anti-aliased axis-aligned rectangle into ``canvas`` (float32, H x W x 3).

    ``mask`` (bool, H x W), when given, gets every pixel with non-zero coverage set.
    """
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = rect
    cx0, cx = _coverage(x0, x1, w)
    cy0, cy = _coverage(y0, y1, h)
    if cx.size == 0 or cy.size == 0:
        return
    cov = np.outer(cy, cx)
    if not cov.any():
        return
    region = (slice(cy0, cy0 + cy.size), slice(cx0, cx0 + cx.size))
    a = (cov * np.float32(alpha))[..., None]
    col = np.asarray(colour, dtype=np.float32)
    canvas[region] = canvas[region] * (1.0 - a) + col * a
    if mask is not None:
        mask[region] |= cov > 0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise in roughly [-1, 1]: coarse random grid, bicubic upsample, blur."""
    gh = max(2, round(h / cell) + 2)
    gw = max(2, round(w / cell) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    up = cv2.GaussianBlur(up, (0, 0), sigmaX=max(0.5, cell / 3.0))
    return up / max(1e-6, float(np.abs(up).max()))


# ---------------------------------------------------------------------------------------------
# Scene
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Walkway:
    """A straight band across the frame: centre line ``y = y0 + slope * x``."""

    y0: float
    slope: float
    half_width: float

    def y_at(self, x: float) -> float:
        return self.y0 + self.slope * x


@dataclass(frozen=True)
class Scene:
    """A static camera view: background and the geometry objects move along."""

    name: str
    height: int
    width: int
    scale: float
    background: np.ndarray  # float32 H x W x 3, RGB in [0, 255]
    walkways: tuple[Walkway, ...]
    crossing_x: float  # where the (anomalous) perpendicular crossing runs, at mid-height
    noise_sigma: float  # camera noise, in grey levels (0..255)

    def crossing_path_x(self, y: float) -> float:
        """x of the perpendicular crossing corridor at height ``y``."""
        slope = self.walkways[0].slope
        return self.crossing_x - slope * (y - self.height / 2.0)


def _scale_for(height: int, width: int) -> float:
    return min(height / _BASE_H, width / _BASE_W)


def build_scene(seed: int, location_index: int, height: int, width: int) -> Scene:
    """Build the static scene of the 0-based demo location ``location_index``."""
    h, w = int(height), int(width)
    s = _scale_for(h, w)
    rng = np.random.default_rng([seed, _STREAM_SCENE, location_index])
    if location_index < len(_STYLES):
        style = _STYLES[location_index]
    else:
        style = _STYLES[int(rng.integers(len(_STYLES)))]

    def jitter(rgb: RGB, amount: float) -> np.ndarray:
        return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)

    ground_rgb = jitter(style["ground"], 10)
    walk_rgb = jitter(style["walkway"], 8)

    # Ground: low-frequency texture plus a little fine static grain.
    low = _smooth_noise(rng, h, w, cell=max(4.0, 18.0 * s))
    mid = _smooth_noise(rng, h, w, cell=max(2.0, 5.0 * s))
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.7)
    tex = 16.0 * low + 7.0 * mid + 3.0 * grain
    bg = ground_rgb[None, None, :] + tex[..., None] * np.array([0.9, 1.0, 0.75], np.float32)

    reserved = np.zeros((h, w), dtype=bool)
    top_limit = 0.0
    if "building" in style["structures"]:
        top_limit = round(h * rng.uniform(0.16, 0.22))

    # Walkways: horizontal-ish bands with room above for figures (and vehicles).
    n_walk = int(style["walkways"])
    slope = float(rng.uniform(-0.12, 0.12))
    hw = float(rng.uniform(8.0, 11.0)) * s
    tilt = abs(slope) * w / 2.0
    lo = top_limit + 18.0 * s + hw + tilt
    hi = h - hw - tilt - 2.0
    if hi < lo:  # very small or very flat frames: flatten and narrow
        slope, tilt, hw = 0.0, 0.0, max(2.0, 6.0 * s)
        lo, hi = top_limit + 14.0 * s + hw, h - hw - 1.0
        lo = min(lo, hi)
    centres: list[float]
    if n_walk == 2 and hi - lo > 2 * hw + 16.0 * s:
        gap = 2 * hw + 16.0 * s
        c1 = float(rng.uniform(lo, hi - gap))
        c2 = float(rng.uniform(c1 + gap, hi))
        centres = [c1, c2]
    else:
        centres = [float(rng.uniform(lo, hi))]
    walkways = tuple(Walkway(c - slope * w / 2.0, slope, hw) for c in centres)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    norm = math.sqrt(1.0 + slope * slope)
    paving = 6.0 * _smooth_noise(rng, h, w, cell=max(3.0, 10.0 * s)) + 2.0 * grain
    joint_step = max(3.0, 8.0 * s)
    for wk in walkways:
        # Signed perpendicular distance from the centre line (pixel centres).
        d = ((yy + 0.5) - (wk.y0 + wk.slope * (xx + 0.5))) / norm
        inside = np.clip(wk.half_width + 0.5 - np.abs(d), 0.0, 1.0)  # 1-px soft edge
        along = (xx + 0.5 + wk.slope * (yy + 0.5)) / norm
        joints = (np.mod(along, joint_step) < 0.8).astype(np.float32)
        pave = walk_rgb[None, None, :] + (paving - 10.0 * joints)[..., None]
        kerb = np.clip(1.2 - np.abs(np.abs(d) - wk.half_width), 0.0, 1.0) * 0.35
        bg = bg * (1 - inside[..., None]) + pave * inside[..., None]
        bg = bg * (1 - kerb[..., None])
        reserved |= np.abs(d) < wk.half_width + 2.0 * s

    # The perpendicular crossing corridor: kept free of structures.
    crossing_x = float(rng.uniform(0.25, 0.75) * w)
    corridor_half = 8.0 * s + 1.0
    path_x = crossing_x - slope * ((yy + 0.5) - h / 2.0)
    reserved |= np.abs((xx + 0.5) - path_x) < corridor_half
    if top_limit > 0:
        reserved[: int(top_limit) + 1, :] = True

    canvas = bg.astype(np.float32)
    for kind, (kmin, kmax) in style["structures"].items():
        count = int(rng.integers(kmin, kmax + 1))
        for _ in range(count):
            _place_structure(canvas, reserved, kind, rng, s, top_limit)

    sigma = float(rng.uniform(3.0, 4.0))
    name = location_name(location_index)
    return Scene(name, h, w, s, np.clip(canvas, 0, 255), walkways, crossing_x, sigma)


def _place_structure(
    canvas: np.ndarray,
    reserved: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    s: float,
    top_limit: float,
) -> None:
    h, w = reserved.shape
    if kind == "building":
        _draw_building(canvas, rng, s, top_limit)
        return
    sizes = {
        "planter": (rng.uniform(10, 16) * s, rng.uniform(6, 9) * s),
        "bench": (rng.uniform(9, 13) * s, rng.uniform(3, 4) * s),
        "lamp": (max(1.0, 1.4 * s), rng.uniform(18, 24) * s),
        "tree": (rng.uniform(12, 18) * s, 0.0),
    }
    bw, bh = sizes[kind]
    if kind == "tree":
        bh = bw
    for _ in range(60):
        x0 = float(rng.uniform(0, max(1.0, w - bw)))
        y0 = float(rng.uniform(top_limit, max(top_limit + 1.0, h - bh)))
        ix0, iy0 = max(0, int(x0) - 1), max(0, int(y0) - 1)
        ix1, iy1 = min(w, math.ceil(x0 + bw) + 1), min(h, math.ceil(y0 + bh) + 1)
        if ix1 <= ix0 or iy1 <= iy0 or reserved[iy0:iy1, ix0:ix1].any():
            continue
        reserved[iy0:iy1, ix0:ix1] = True
        rect = (x0, y0, x0 + bw, y0 + bh)
        if kind == "planter":
            _draw_planter(canvas, rect, rng, s)
        elif kind == "bench":
            _draw_bench(canvas, rect, s)
        elif kind == "lamp":
            _draw_lamp(canvas, rect, s)
        else:
            _draw_tree(canvas, rect, rng)
        return


def _shadow(canvas: np.ndarray, rect: Rect, s: float) -> None:
    x0, y0, x1, y1 = rect
    off = 1.5 * s
    _paint_rect(canvas, (x0 + off, y0 + off, x1 + off, y1 + off), (20, 24, 18), alpha=0.3)


def _draw_planter(canvas: np.ndarray, rect: Rect, rng: np.random.Generator, s: float) -> None:
    x0, y0, x1, y1 = rect
    _shadow(canvas, rect, s)
    _paint_rect(canvas, rect, (150, 146, 140))
    inset = max(0.8, 1.2 * s)
    inner = (x0 + inset, y0 + inset, x1 - inset, y1 - inset)
    _paint_rect(canvas, inner, (54, 92, 40))
    for _ in range(4):  # a few shrubs
        cx = rng.uniform(inner[0], inner[2])
        cy = rng.uniform(inner[1], inner[3])
        r = max(0.8, 1.6 * s)
        green = (40 + rng.uniform(0, 30), 110 + rng.uniform(0, 40), 40)
        bx0, bx1 = max(inner[0], cx - r), min(inner[2], cx + r)
        by0, by1 = max(inner[1], cy - r), min(inner[3], cy + r)
        _paint_rect(canvas, (bx0, by0, bx1, by1), green, alpha=0.8)


def _draw_bench(canvas: np.ndarray, rect: Rect, s: float) -> None:
    x0, y0, x1, y1 = rect
    _shadow(canvas, rect, s)
    leg = max(0.8, 1.0 * s)
    seat_h = (y1 - y0) * 0.6
    _paint_rect(canvas, (x0, y0, x1, y0 + seat_h), (118, 80, 46))
    _paint_rect(canvas, (x0, y0, x1, y0 + max(0.5, 0.7 * s)), (146, 104, 62))
    _paint_rect(canvas, (x0 + leg, y0 + seat_h, x0 + 2 * leg, y1), (48, 48, 50))
    _paint_rect(canvas, (x1 - 2 * leg, y0 + seat_h, x1 - leg, y1), (48, 48, 50))


def _draw_lamp(canvas: np.ndarray, rect: Rect, s: float) -> None:
    x0, y0, x1, y1 = rect
    _paint_rect(canvas, (x0 + 1.5 * s, y1 - 1.0 * s, x1 + 5.0 * s, y1), (20, 24, 18), alpha=0.3)
    _paint_rect(canvas, rect, (62, 64, 68))
    head = max(1.0, 2.5 * s)
    cx = (x0 + x1) / 2.0
    _paint_rect(canvas, (cx - head, y0, cx + head, y0 + max(1.0, 1.8 * s)), (236, 226, 170))
    _paint_rect(canvas, (x0 - 0.6 * s, y1 - 1.0 * s, x1 + 0.6 * s, y1), (50, 50, 54))


def _draw_tree(canvas: np.ndarray, rect: Rect, rng: np.random.Generator) -> None:
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = rect
    cx, cy, r = (x0 + x1) / 2.0, (y0 + y1) / 2.0, (x1 - x0) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wobble = 0.12 * r * _smooth_noise(rng, h, w, cell=max(2.0, r / 2.0))
    dist = np.sqrt((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) + wobble
    shadow_d = np.sqrt((xx + 0.5 - cx - 0.25 * r) ** 2 + (yy + 0.5 - cy - 0.3 * r) ** 2)
    shadow = np.clip(r + 0.5 - shadow_d, 0, 1) * 0.35
    canvas *= 1 - shadow[..., None]
    crown = np.clip(r + 0.5 - dist, 0, 1)
    shade = np.clip((xx + yy - cx - cy) / (2.0 * r), -1, 1)  # lit from the top left
    leaf = np.stack([34 - 10 * shade, 82 - 22 * shade, 30 - 8 * shade], axis=-1)
    leaf += 10 * _smooth_noise(rng, h, w, cell=max(1.5, r / 4.0))[..., None]
    canvas[:] = canvas * (1 - crown[..., None]) + leaf * crown[..., None]


def _draw_building(canvas: np.ndarray, rng: np.random.Generator, s: float, top: float) -> None:
    w = canvas.shape[1]
    wall = np.clip(np.array([150, 136, 122], np.float32) + rng.uniform(-20, 20, 3), 0, 255)
    _paint_rect(canvas, (0, 0, w, top), wall)
    _paint_rect(canvas, (0, top - max(1.0, 1.5 * s), w, top), wall * 0.55)  # base / kerb
    win_w, win_h = max(1.5, 6.0 * s), max(1.5, 0.35 * top)
    step = win_w * rng.uniform(1.8, 2.4)
    x = rng.uniform(1.0, step)
    while x + win_w < w:
        _paint_rect(canvas, (x, 0.22 * top, x + win_w, 0.22 * top + win_h), (58, 70, 86))
        x += step
    door = rng.uniform(0.3, 0.7) * w
    _paint_rect(canvas, (door, 0.3 * top, door + 1.6 * win_w, top), (70, 52, 40))


# ---------------------------------------------------------------------------------------------
# Moving objects
# ---------------------------------------------------------------------------------------------
@dataclass
class _Mover:
    """A moving object: anchor (bottom centre) at (x, y), parts relative to the anchor."""

    kind: str  # "pedestrian", "cyclist", "skater", "vehicle"
    x: float
    y: float
    vx: float
    vy: float
    width: float
    height: float
    colours: dict[str, RGB]
    walkway: Walkway | None = None  # when set, y follows the walkway line plus ``lateral``
    lateral: float = 0.0
    phase: float = 0.0
    speed_wobble: float = 0.0
    wobble_phase: float = 0.0
    anomalous: bool = False
    direction: int = 1
    extra: dict = field(default_factory=dict)

    def step(self, t: int) -> None:
        factor = 1.0 + self.speed_wobble * math.sin(0.11 * t + self.wobble_phase)
        self.x += self.vx * factor
        if self.walkway is not None:
            self.y = self.walkway.y_at(self.x) + self.lateral
        else:
            self.y += self.vy * factor
        self.phase += math.hypot(self.vx, self.vy) * factor / max(1.0, 0.35 * self.height)

    def bbox(self) -> Rect:
        return (self.x - self.width / 2, self.y - self.height, self.x + self.width / 2, self.y)

    def parts(self) -> list[tuple[Rect, RGB]]:
        x0, y0, x1, y1 = self.bbox()
        w, h = self.width, self.height
        c = self.colours
        if self.kind == "pedestrian":
            return _pedestrian_parts(x0, y0, w, h, c, self.phase)
        if self.kind == "skater":
            board_h = max(0.6, 0.08 * h)
            body_w = w * 0.6
            bx0 = x0 + (w - body_w) / 2
            parts = _pedestrian_parts(bx0, y0, body_w, h - board_h, c, 0.0)
            parts.append(((x0, y1 - board_h, x1, y1), c["board"]))
            return parts
        if self.kind == "cyclist":
            return _cyclist_parts(x0, y0, w, h, c, self.direction)
        return _vehicle_parts(x0, y0, w, h, c, self.direction)


def _pedestrian_parts(
    x0: float, y0: float, w: float, h: float, c: dict[str, RGB], phase: float
) -> list[tuple[Rect, RGB]]:
    head_h = 0.24 * h
    head_w = 0.62 * w
    hx0 = x0 + (w - head_w) / 2
    torso_y1 = y0 + 0.6 * h
    leg_w = 0.4 * w
    swing = 0.1 * w * math.sin(phase)
    return [
        ((x0 + 0.1 * w + swing, torso_y1, x0 + 0.1 * w + swing + leg_w, y0 + h), c["legs"]),
        ((x0 + 0.5 * w - swing, torso_y1, x0 + 0.5 * w - swing + leg_w, y0 + h), c["legs"]),
        ((x0, y0 + head_h, x0 + w, torso_y1), c["shirt"]),
        ((hx0, y0, hx0 + head_w, y0 + head_h), c["skin"]),
        ((hx0, y0, hx0 + head_w, y0 + 0.4 * head_h), c["hair"]),
    ]


def _cyclist_parts(
    x0: float, y0: float, w: float, h: float, c: dict[str, RGB], direction: int
) -> list[tuple[Rect, RGB]]:
    wheel = 0.3 * h
    frame_y = y0 + h - 0.5 * wheel
    rider_w = 0.45 * w
    rx0 = x0 + (w - rider_w) / 2 - 0.08 * w * direction
    tyre = (28, 28, 30)
    return [
        ((x0, y0 + h - wheel, x0 + wheel, y0 + h), tyre),
        ((x0 + w - wheel, y0 + h - wheel, x0 + w, y0 + h), tyre),
        ((x0 + 0.5 * wheel, frame_y - 0.15 * h, x0 + w - 0.5 * wheel, frame_y), c["bike"]),
        ((rx0, y0 + 0.25 * h, rx0 + rider_w, y0 + 0.65 * h), c["shirt"]),
        ((rx0 + 0.1 * rider_w, y0, rx0 + 0.9 * rider_w, y0 + 0.25 * h), c["helmet"]),
    ]


def _vehicle_parts(
    x0: float, y0: float, w: float, h: float, c: dict[str, RGB], direction: int
) -> list[tuple[Rect, RGB]]:
    body = c["body"]
    roof = tuple(min(255.0, v * 1.08 + 8) for v in body)
    wheel_h, wheel_w = 0.2 * h, 0.18 * w
    glass = (46, 58, 72)
    front = x0 + w if direction > 0 else x0
    wind_w = 0.16 * w
    wx0 = front - wind_w - 0.04 * w if direction > 0 else front + 0.04 * w
    return [
        ((x0 + 0.08 * w, y0 + h - wheel_h, x0 + 0.08 * w + wheel_w, y0 + h), (22, 22, 24)),
        ((x0 + w - 0.08 * w - wheel_w, y0 + h - wheel_h, x0 + w - 0.08 * w, y0 + h), (22, 22, 24)),
        ((x0, y0, x0 + w, y0 + h - 0.5 * wheel_h), body),
        ((x0 + 0.1 * w, y0 + 0.08 * h, x0 + 0.9 * w, y0 + 0.3 * h), roof),
        ((wx0, y0 + 0.1 * h, wx0 + wind_w, y0 + 0.55 * h), glass),
    ]


def _pick(rng: np.random.Generator, palette: Sequence[RGB]) -> RGB:
    return palette[int(rng.integers(len(palette)))]


def _person_colours(rng: np.random.Generator) -> dict[str, RGB]:
    return {
        "shirt": _pick(rng, _SHIRTS),
        "legs": _pick(rng, _TROUSERS),
        "skin": _pick(rng, _SKIN),
        "hair": _pick(rng, _HAIR),
    }


def _new_pedestrian(
    rng: np.random.Generator, scene: Scene, *, x: float | None, direction: int
) -> _Mover:
    s = scene.scale
    wk = scene.walkways[int(rng.integers(len(scene.walkways)))]
    pw, ph = max(2.0, 5.0 * s), max(4.0, 12.0 * s)
    speed = float(rng.uniform(0.5, 1.5)) * s
    vx = direction * speed / math.sqrt(1.0 + wk.slope**2)
    if x is None:  # entering: fully outside, just beyond the edge it enters from
        x = -pw / 2 - 0.01 if direction > 0 else scene.width + pw / 2 + 0.01
    lateral = float(rng.uniform(-0.45, 0.8)) * wk.half_width
    return _Mover(
        kind="pedestrian",
        x=float(x),
        y=wk.y_at(float(x)) + lateral,
        vx=vx,
        vy=0.0,
        width=pw,
        height=ph,
        colours=_person_colours(rng),
        walkway=wk,
        lateral=lateral,
        phase=float(rng.uniform(0, 2 * math.pi)),
        speed_wobble=float(rng.uniform(0.03, 0.1)),
        wobble_phase=float(rng.uniform(0, 2 * math.pi)),
        direction=direction,
    )


def _visible(rect: Rect, height: int, width: int) -> bool:
    """Whether ``rect`` overlaps the frame [0, width) x [0, height) with positive area."""
    x0, y0, x1, y1 = rect
    return min(x1, width) > max(x0, 0.0) and min(y1, height) > max(y0, 0.0)


def _new_anomaly(rng: np.random.Generator, scene: Scene, kind: str, t0: int) -> _Mover:
    """Create the anomalous object so that it first enters the frame exactly at frame ``t0``.

    Its position is returned for frame index 0 (it is stepped forwards from there).
    """
    s, h, w = scene.scale, scene.height, scene.width
    direction = 1 if rng.random() < 0.5 else -1
    if kind == "wrong_way_crossing":
        speed = float(rng.uniform(0.8, 1.4)) * s
        pw, ph = max(2.0, 5.0 * s), max(4.0, 12.0 * s)
        slope = scene.walkways[0].slope
        norm = math.sqrt(1.0 + slope * slope)
        vy = direction * speed / norm
        vx = -slope * vy
        # Leading edge half a step inside the frame at t0: feet when going down, head going up.
        y_t0 = 0.5 * abs(vy) if direction > 0 else h + ph - 0.5 * abs(vy)
        x_t0 = scene.crossing_path_x(y_t0)
        m = _Mover(
            kind="pedestrian",
            x=x_t0 - vx * t0,
            y=y_t0 - vy * t0,
            vx=vx,
            vy=vy,
            width=pw,
            height=ph,
            colours=_person_colours(rng),
            phase=float(rng.uniform(0, 2 * math.pi)),
            anomalous=True,
            direction=direction,
        )
        return m

    wk = scene.walkways[int(rng.integers(len(scene.walkways)))]
    if kind == "fast_object":
        sub = "cyclist" if rng.random() < 0.5 else "skater"
        speed = float(rng.uniform(5.0, 8.0)) * s
        if sub == "cyclist":
            ow, oh = max(3.0, 10.0 * s), max(4.0, 12.0 * s)
            colours = {"shirt": _pick(rng, _SHIRTS), "bike": _pick(rng, _SHIRTS)}
            colours["helmet"] = _pick(rng, _SHIRTS)
        else:
            ow, oh = max(3.0, 8.0 * s), max(4.0, 13.0 * s)
            colours = _person_colours(rng)
            colours["board"] = (60, 40, 30)
        lateral = float(rng.uniform(-0.3, 0.6)) * wk.half_width
    elif kind == "vehicle":
        sub = "vehicle"
        speed = float(rng.uniform(1.5, 2.0)) * s
        ow, oh = max(6.0, 30.0 * s), max(4.0, 16.0 * s)
        colours = {"body": _pick(rng, _VEHICLES)}
        lateral = 0.5 * wk.half_width
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {ANOMALY_KINDS}")
    vx = direction * speed / math.sqrt(1.0 + wk.slope**2)
    # Leading edge half a step inside the frame at t0.
    x_t0 = -ow / 2 + 0.5 * abs(vx) if direction > 0 else w + ow / 2 - 0.5 * abs(vx)
    x_start = x_t0 - vx * t0
    return _Mover(
        kind=sub,
        x=x_start,
        y=wk.y_at(x_start) + lateral,
        vx=vx,
        vy=0.0,
        width=ow,
        height=oh,
        colours=colours,
        walkway=wk,
        lateral=lateral,
        anomalous=True,
        direction=direction,
    )


# ---------------------------------------------------------------------------------------------
# Clip rendering
# ---------------------------------------------------------------------------------------------
@dataclass
class RenderedClip:
    """One rendered clip.

    ``frames``: uint8 T x H x W x 3 (RGB). ``anomaly_mask``: bool T x H x W, the pixels the
    anomalous object covers (all false for a normal clip). ``anomaly_rects``: per frame, the
    anomalous object's part rectangles ``(x0, y0, x1, y1)`` (empty for a normal clip).
    """

    frames: np.ndarray
    anomaly_mask: np.ndarray
    kind: str | None
    anomaly_rects: list[list[Rect]]
    event_start: int | None  # 0-based frame index the anomalous object enters the frame

    @property
    def anomalous_frames(self) -> np.ndarray:
        """bool per frame: any pixel of the anomalous object inside the frame."""
        return self.anomaly_mask.reshape(self.anomaly_mask.shape[0], -1).any(axis=1)

    def intervals(self) -> list[tuple[int, int]]:
        """1-based inclusive anomalous frame intervals (what ``labels.csv`` records)."""
        return frames_to_intervals(self.anomalous_frames)


def render_clip(
    scene: Scene,
    seed: int,
    split: str,
    clip_index: int,
    n_frames: int,
    kind: str | None,
    *,
    location_index: int = 0,
) -> RenderedClip:
    """Render one clip of ``scene`` (exactly what the writers store for that clip)."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    h, w, s = scene.height, scene.width, scene.scale
    key = [seed, location_index, _SPLIT_CODES.get(split, 9), clip_index]
    rng = np.random.default_rng([_STREAM_CLIP, *key])
    noise_rng = np.random.default_rng([_STREAM_NOISE, *key])

    # Pedestrian traffic: a few visible at a time, entering and leaving at the frame edges.
    max_visible = 4
    mean_visible = float(rng.uniform(1.5, 2.5))
    cross_frames = (w + 5.0 * s) / max(1e-3, 1.0 * s)
    spawn_rate = mean_visible / cross_frames
    movers: list[_Mover] = []
    for _ in range(int(rng.integers(0, 4))):
        direction = 1 if rng.random() < 0.5 else -1
        movers.append(
            _new_pedestrian(rng, scene, x=float(rng.uniform(0.05, 0.95) * w), direction=direction)
        )

    anomaly: _Mover | None = None
    event_start: int | None = None
    if kind is not None:
        # Enters at a random frame of the first half, after a few normal frames when possible.
        first_half = max(1, (n_frames + 1) // 2)
        event_start = int(rng.integers(min(first_half - 1, max(1, n_frames // 10)), first_half))
        anomaly = _new_anomaly(rng, scene, kind, event_start)

    # Smooth, tiny global brightness flicker.
    flicker = np.empty(n_frames, dtype=np.float32)
    level = 0.0
    f_amp, f_period, f_phase = rng.uniform(0.003, 0.007), rng.uniform(15, 40), rng.uniform(0, 6.3)
    for t in range(n_frames):
        level = 0.8 * level + 0.2 * float(rng.normal(0.0, 0.006))
        flicker[t] = 1.0 + f_amp * math.sin(2 * math.pi * t / f_period + f_phase) + level

    frames = np.empty((n_frames, h, w, 3), dtype=np.uint8)
    mask = np.zeros((n_frames, h, w), dtype=bool)
    rects: list[list[Rect]] = []
    for t in range(n_frames):
        if t > 0:
            for m in movers:
                m.step(t)
            if anomaly is not None:
                anomaly.step(t)
            movers = [m for m in movers if not _gone(m, w)]
            if len(movers) < max_visible and rng.random() < spawn_rate:
                direction = 1 if rng.random() < 0.5 else -1
                movers.append(_new_pedestrian(rng, scene, x=None, direction=direction))
        canvas = scene.background.copy()
        drawn = sorted([*movers, *([anomaly] if anomaly is not None else [])], key=lambda m: m.y)
        frame_rects: list[Rect] = []
        for m in drawn:
            parts = m.parts()
            for rect, colour in parts:
                _paint_rect(canvas, rect, colour, mask=mask[t] if m.anomalous else None)
            if m.anomalous:
                frame_rects = [r for r, _ in parts]
        rects.append(frame_rects)
        noise = noise_rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(
            scene.noise_sigma
        )
        img = canvas * flicker[t] + noise
        np.clip(np.rint(img), 0, 255, out=img)
        frames[t] = img.astype(np.uint8)

    clip = RenderedClip(frames, mask, kind, rects, event_start)
    if kind is not None and not clip.anomalous_frames.any():
        raise RuntimeError(f"internal error: {kind} object never entered the frame")
    return clip


def _gone(m: _Mover, width: int) -> bool:
    x0, _, x1, _ = m.bbox()
    return (m.vx > 0 and x0 >= width) or (m.vx < 0 and x1 <= 0)


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
def _check_sizes(**values: int) -> None:
    for key, value in values.items():
        minimum = _MIN_SIZE if key in ("height", "width") else 1
        if key == "frames_per_clip":
            minimum = 2
        if key in ("train_clips", "test_clips", "locations"):
            minimum = 0
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _refuse_non_empty(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"refusing to write demo data into existing non-empty location {path}")


def _write_png_frames(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    digits = max(4, len(str(len(frames))))
    for i, frame in enumerate(frames, start=1):
        path = folder / f"frame_{i:0{digits}d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


def _write_video(path: Path, frames: np.ndarray) -> None:
    """Write RGB frames as ``.avi`` (MJPG) or ``.mp4`` (mp4v), then read back and verify."""
    h, w = frames.shape[1:3]
    if path.suffix == ".avi":
        writer = cv2.VideoWriter(
            str(path),
            cv2.CAP_OPENCV_MJPEG,
            cv2.VideoWriter_fourcc(*"MJPG"),
            FPS,
            (w, h),
            [cv2.VIDEOWRITER_PROP_QUALITY, MJPG_QUALITY],
        )
    else:
        writer = cv2.VideoWriter(
            str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h)
        )
    if not writer.isOpened():
        raise OSError(f"could not open a video writer for {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    n_read, shape = _count_video_frames(path)
    if n_read != len(frames) or (n_read and shape != (h, w)):
        raise RuntimeError(
            f"video {path} reads back as {n_read} frames of {shape}, "
            f"expected {len(frames)} frames of {(h, w)}"
        )


def _count_video_frames(path: Path) -> tuple[int, tuple[int, int] | None]:
    cap = cv2.VideoCapture(str(path))
    try:
        n, shape = 0, None
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            shape = frame.shape[:2]
        return n, shape
    finally:
        cap.release()


def _write_clip(split_dir: Path, split: str, clip_index: int, n_clips: int, frames) -> None:
    name = clip_name(split, clip_index)
    form = clip_file_form(split, clip_index, n_clips)
    if form == "png":
        _write_png_frames(split_dir / name, frames)
    else:
        _write_video(split_dir / f"{name}.{form}", frames)


def write_demo_datastore(
    root: Path | str,
    locations: int = 2,
    seed: int = 0,
    *,
    train_clips: int = 6,
    test_clips: int = 7,
    frames_per_clip: int = 120,
    height: int = 120,
    width: int = 160,
    progress: bool = True,
) -> list[str]:
    """Write ``locations`` synthetic camera locations under ``root``; return their names.

    Layout per location: ``train/`` and ``test/`` with clips as PNG frame folders
    (``<clip>/frame_0001.png`` ...) or video files (every third clip: ``<clip>.avi`` MJPG, the
    first test video ``<clip>.mp4`` mp4v), and ``test/labels.csv``. Test clip 1 is normal,
    the others hold one anomaly each, cycling through :data:`ANOMALY_KINDS`.

    Raises ``ValueError`` (before writing anything) if a location folder already exists
    and is not empty.
    """
    _check_sizes(
        locations=locations,
        train_clips=train_clips,
        test_clips=test_clips,
        frames_per_clip=frames_per_clip,
        height=height,
        width=width,
    )
    _check_seed(seed)
    root = Path(root)
    names = [location_name(i) for i in range(locations)]
    for name in names:
        _refuse_non_empty(root / name)

    total = locations * (train_clips + test_clips)
    with (
        logging_redirect_tqdm(),
        tqdm(total=total, desc="demo data", unit="clip", disable=not progress) as bar,
    ):
        for loc_index, name in enumerate(names):
            bar.set_postfix_str(name)
            loc_dir = root / name
            scene = build_scene(seed, loc_index, height, width)
            rows: list[tuple[str, int, int, str]] = []
            for split, n_clips in (("train", train_clips), ("test", test_clips)):
                split_dir = loc_dir / split
                split_dir.mkdir(parents=True, exist_ok=True)
                for ci in range(1, n_clips + 1):
                    kind = anomaly_kind_for_test_clip(ci) if split == "test" else None
                    clip = render_clip(
                        scene, seed, split, ci, frames_per_clip, kind, location_index=loc_index
                    )
                    _write_clip(split_dir, split, ci, n_clips, clip.frames)
                    if kind is not None:
                        cname = clip_name(split, ci)
                        rows += [(cname, a, b, kind) for a, b in clip.intervals()]
                    bar.update(1)
            with open(loc_dir / "test" / "labels.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(LABELS_HEADER)
                writer.writerows(rows)
            logger.info(
                "wrote demo location %s: %d train + %d test clips of %d frames (%dx%d), "
                "%d labelled anomaly interval(s)",
                loc_dir,
                train_clips,
                test_clips,
                frames_per_clip,
                width,
                height,
                len(rows),
            )
    return names


def ucsd_gt_line(intervals: Sequence[tuple[int, int]]) -> str:
    """One UCSD ground-truth line: ``TestVideoFile{end+1}.gt_frame = [61:180, 190:200];``."""
    body = ", ".join(f"{a}:{b}" for a, b in intervals)
    return f"TestVideoFile{{end+1}}.gt_frame = [{body}];"


def write_ucsd_style_location(
    root: Path | str,
    name: str = "UCSDped_synth",
    seed: int = 0,
    *,
    train_clips: int = 3,
    test_clips: int = 2,
    frames_per_clip: int = 40,
    height: int = 79,
    width: int = 119,
) -> Path:
    """Write one greyscale location in the UCSD Anomaly Dataset layout; return its path.

    ``<name>/Train/Train001/001.tif ...``, ``<name>/Test/Test001/001.tif ...``,
    ``<name>/Test/Test001_gt/001.bmp ...`` (binary masks of the anomalous object) and
    ``<name>/Test/<name>.m``; every test clip has one anomaly. Like the UCSD download it also
    holds stray files (``README.txt`` at the top, ``Train/.DS_Store``) that readers must skip.
    Frames are the greyscale (``cv2.COLOR_RGB2GRAY``) of :func:`render_clip` output, see
    :data:`UCSD_STREAM_INDEX`.
    """
    _check_sizes(
        train_clips=train_clips,
        test_clips=test_clips,
        frames_per_clip=frames_per_clip,
        height=height,
        width=width,
    )
    _check_seed(seed)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"invalid location name {name!r}")
    loc = Path(root) / name
    _refuse_non_empty(loc)
    scene = build_scene(seed, 0, height, width)
    digits = max(3, len(str(frames_per_clip)))
    tif_params = [cv2.IMWRITE_TIFF_COMPRESSION, 1]  # uncompressed, like the UCSD files

    def write_grey(folder: Path, frames: np.ndarray) -> None:
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames, start=1):
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            path = folder / f"{i:0{digits}d}.tif"
            if not cv2.imwrite(str(path), grey, tif_params):
                raise OSError(f"could not write {path}")

    (loc / "Train").mkdir(parents=True, exist_ok=True)
    (loc / "Test").mkdir(parents=True, exist_ok=True)
    for ci in range(1, train_clips + 1):
        clip = render_clip(
            scene, seed, "train", ci, frames_per_clip, None, location_index=UCSD_STREAM_INDEX
        )
        write_grey(loc / "Train" / f"Train{ci:03d}", clip.frames)
    lines = ["TestVideoFile = {};"]
    for ci in range(1, test_clips + 1):
        kind = anomaly_kind_for_test_clip(ci, first_is_normal=False)
        clip = render_clip(
            scene, seed, "test", ci, frames_per_clip, kind, location_index=UCSD_STREAM_INDEX
        )
        write_grey(loc / "Test" / f"Test{ci:03d}", clip.frames)
        gt_dir = loc / "Test" / f"Test{ci:03d}_gt"
        gt_dir.mkdir()
        for i, m in enumerate(clip.anomaly_mask, start=1):
            path = gt_dir / f"{i:0{digits}d}.bmp"
            if not cv2.imwrite(str(path), m.astype(np.uint8) * 255):
                raise OSError(f"could not write {path}")
        lines.append(ucsd_gt_line(clip.intervals()))
    (loc / "Test" / f"{name}.m").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (loc / "README.txt").write_text(
        "Synthetic UCSD-style anomaly data written by videoanom (videoanom.data.demo).\n"
        "Train/ holds normal clips; Test/ holds clips with anomalies, TestNNN_gt/ pixel masks\n"
        f"and {name}.m frame-level ground truth.\n",
        encoding="utf-8",
    )
    (loc / "Train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(26))
    logger.info(
        "wrote UCSD-style location %s: %d train + %d test clips of %d frames (%dx%d)",
        loc,
        train_clips,
        test_clips,
        frames_per_clip,
        width,
        height,
    )
    return loc
