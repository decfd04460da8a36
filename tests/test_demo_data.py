"""Tests of the synthetic demo data generator (videoanom.data.demo)."""

from __future__ import annotations

import csv
import itertools
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from videoanom.data import demo
from videoanom.data.demo import (
    ANOMALY_KINDS,
    anomaly_kind_for_test_clip,
    build_scene,
    frames_to_intervals,
    location_name,
    render_clip,
    write_demo_datastore,
    write_ucsd_style_location,
)

# A small but complete datastore: 6 train + 4 test clips, so every clip form and kind appears.
SMALL = {"train_clips": 6, "test_clips": 4, "frames_per_clip": 40, "height": 72, "width": 96}
TINY = {"train_clips": 3, "test_clips": 2, "frames_per_clip": 24, "height": 48, "width": 64}
VIDEO_SUFFIXES = {".avi", ".mp4"}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def read_labels(location: Path) -> list[dict[str, str]]:
    with open(location / "test" / "labels.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["clip", "start_frame", "end_frame", "kind"]
        return list(reader)


def clip_entries(split_dir: Path) -> dict[str, Path]:
    """clip name -> folder or video file (labels.csv excluded)."""
    out = {}
    for p in sorted(split_dir.iterdir()):
        if p.is_dir():
            out[p.name] = p
        elif p.suffix in VIDEO_SUFFIXES:
            out[p.stem] = p
        else:
            assert p.name == "labels.csv", f"unexpected file {p}"
    return out


def read_video(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def read_clip(entry: Path) -> np.ndarray:
    if entry.is_dir():
        files = sorted(entry.iterdir())
        return np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    return read_video(entry)


def rect_cells_mask(rects, height: int, width: int) -> np.ndarray:
    """Pixels whose cell [c, c+1) x [r, r+1) overlaps any rect with positive area."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in rects:
        c0, c1 = max(0, math.floor(x0)), min(width, math.ceil(x1))
        r0, r1 = max(0, math.floor(y0)), min(height, math.ceil(y1))
        for r in range(r0, r1):
            if min(y1, r + 1) <= max(y0, r):
                continue
            for c in range(c0, c1):
                if min(x1, c + 1) > max(x0, c):
                    mask[r, c] = True
    return mask


def rect_visible(rect, height: int, width: int) -> bool:
    x0, y0, x1, y1 = rect
    return min(x1, width) > max(x0, 0) and min(y1, height) > max(y0, 0)


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("small_store")
    names = write_demo_datastore(root, locations=2, seed=3, progress=False, **SMALL)
    return root, names


@pytest.fixture(scope="module")
def tiny_stores(tmp_path_factory) -> tuple[Path, Path, Path]:
    a = tmp_path_factory.mktemp("tiny_a")
    b = tmp_path_factory.mktemp("tiny_b")
    c = tmp_path_factory.mktemp("tiny_c")
    write_demo_datastore(a, locations=1, seed=0, progress=False, **TINY)
    write_demo_datastore(b, locations=1, seed=0, progress=False, **TINY)
    write_demo_datastore(c, locations=1, seed=1, progress=False, **TINY)
    return a, b, c


@pytest.fixture(scope="module")
def ucsd_location(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucsd")
    return write_ucsd_style_location(root, seed=2)


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files_including_videos(tiny_stores):
    a, b, _ = tiny_stores
    files_a, files_b = all_files(a), all_files(b)
    assert files_a.keys() == files_b.keys()
    suffixes = {Path(k).suffix for k in files_a}
    assert {".png", ".avi", ".mp4", ".csv"} <= suffixes
    different = [k for k in files_a if files_a[k] != files_b[k]]
    assert different == []


def test_different_seed_gives_different_data(tiny_stores):
    a, _, c = tiny_stores
    files_a, files_c = all_files(a), all_files(c)
    pngs = [k for k in files_a if k.endswith(".png")]
    assert pngs and set(pngs) <= files_c.keys()
    assert all(files_a[k] != files_c[k] for k in pngs)


def test_scene_and_render_are_deterministic():
    s1, s2 = build_scene(5, 1, 48, 64), build_scene(5, 1, 48, 64)
    assert np.array_equal(s1.background, s2.background)
    assert s1.walkways == s2.walkways
    c1 = render_clip(s1, 5, "test", 3, 12, "vehicle", location_index=1)
    c2 = render_clip(s2, 5, "test", 3, 12, "vehicle", location_index=1)
    assert np.array_equal(c1.frames, c2.frames)
    assert np.array_equal(c1.anomaly_mask, c2.anomaly_mask)
    # Locations differ from each other.
    assert not np.allclose(build_scene(5, 0, 48, 64).background, s1.background, atol=10)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------
def test_location_names():
    assert [location_name(i) for i in range(6)] == [
        "demo-plaza",
        "demo-campus",
        "demo-station",
        "demo-park",
        "demo-site-5",
        "demo-site-6",
    ]


def test_many_locations_written_with_returned_names(tmp_path):
    names = write_demo_datastore(
        tmp_path,
        locations=5,
        progress=False,
        train_clips=1,
        test_clips=1,
        frames_per_clip=2,
        height=32,
        width=40,
    )
    assert names == [location_name(i) for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_layout_clip_forms_names_and_frame_counts(small_store):
    root, names = small_store
    assert names == ["demo-plaza", "demo-campus"]
    assert sorted(p.name for p in root.iterdir()) == sorted(names)
    h, w, n = SMALL["height"], SMALL["width"], SMALL["frames_per_clip"]
    for name in names:
        loc = root / name
        # Nothing but train/ and test/ (and test/labels.csv) in a location.
        assert sorted(p.name for p in loc.iterdir()) == ["test", "train"]
        for split, count in (("train", SMALL["train_clips"]), ("test", SMALL["test_clips"])):
            entries = clip_entries(loc / split)
            assert list(entries) == [f"{split}_{i:03d}" for i in range(1, count + 1)]
            dirs = [e for e in entries.values() if e.is_dir()]
            videos = [e for e in entries.values() if e.is_file()]
            assert dirs and videos, f"{split} must hold both frame folders and video files"
            for i, entry in enumerate(entries.values(), start=1):
                assert entry.is_file() == (i % 3 == 0)
                if entry.is_dir():
                    files = sorted(entry.iterdir())
                    assert [f.name for f in files] == [
                        f"frame_{k:04d}.png" for k in range(1, n + 1)
                    ]
                    img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
                    assert img.shape == (h, w, 3) and img.dtype == np.uint8
                else:
                    frames = read_video(entry)
                    assert frames.shape == (n, h, w, 3)
        train_videos = {e.suffix for e in clip_entries(loc / "train").values() if e.is_file()}
        test_videos = {e.suffix for e in clip_entries(loc / "test").values() if e.is_file()}
        assert train_videos == {".avi"}
        assert ".mp4" in test_videos


def test_tiny_sizes_work_with_both_forms_and_a_labelled_anomaly(tiny_stores):
    a, _, _ = tiny_stores
    loc = a / "demo-plaza"
    for split in ("train", "test"):
        entries = clip_entries(loc / split)
        assert any(e.is_dir() for e in entries.values())
        assert any(e.is_file() for e in entries.values())
        for entry in entries.values():
            frames = read_clip(entry)
            assert frames.shape == (TINY["frames_per_clip"], TINY["height"], TINY["width"], 3)
    rows = read_labels(loc)
    assert [r["clip"] for r in rows] == ["test_002"]
    start, end = int(rows[0]["start_frame"]), int(rows[0]["end_frame"])
    assert 1 <= start <= end <= TINY["frames_per_clip"]
    assert start <= (TINY["frames_per_clip"] + 1) // 2  # enters in the first half


def test_video_clips_match_the_rendered_frames_closely(small_store):
    root, _ = small_store
    scene = build_scene(3, 0, SMALL["height"], SMALL["width"])
    for split, ci in (("train", 3), ("test", 3)):
        entry = next(p for p in (root / "demo-plaza" / split).glob(f"{split}_{ci:03d}.*"))
        kind = anomaly_kind_for_test_clip(ci) if split == "test" else None
        clip = render_clip(scene, 3, split, ci, SMALL["frames_per_clip"], kind, location_index=0)
        decoded = read_video(entry).astype(np.float32)
        err = np.abs(decoded - clip.frames.astype(np.float32)).mean()
        assert err < 8.0, f"{entry.name}: mean abs error {err:.1f} against the rendered frames"


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------
def test_labels_exactly_mark_frames_where_the_anomalous_object_is_visible(small_store):
    root, names = small_store
    h, w, n = SMALL["height"], SMALL["width"], SMALL["frames_per_clip"]
    for loc_index, name in enumerate(names):
        loc = root / name
        rows = read_labels(loc)
        scene = build_scene(3, loc_index, h, w)
        entries = clip_entries(loc / "test")
        for ci in range(1, SMALL["test_clips"] + 1):
            cname = f"test_{ci:03d}"
            kind = anomaly_kind_for_test_clip(ci)
            clip = render_clip(scene, 3, "test", ci, n, kind, location_index=loc_index)
            if entries[cname].is_dir():  # the renderer reproduces exactly what was written
                assert np.array_equal(read_clip(entries[cname]), clip.frames)
            # Visibility from the object's own geometry, independent of the mask.
            visible = [any(rect_visible(r, h, w) for r in rects) for rects in clip.anomaly_rects]
            for t, rects in enumerate(clip.anomaly_rects):
                assert np.array_equal(clip.anomaly_mask[t], rect_cells_mask(rects, h, w))
            expected = frames_to_intervals(visible)
            assert expected == frames_to_intervals(clip.anomaly_mask.any(axis=(1, 2)))
            got = [(int(r["start_frame"]), int(r["end_frame"])) for r in rows if r["clip"] == cname]
            assert got == expected, f"{name}/{cname}"
            assert {r["kind"] for r in rows if r["clip"] == cname} == ({kind} if kind else set())
            if kind is not None:
                assert expected, f"{name}/{cname}: the {kind} never entered the frame"
                start = expected[0][0]
                assert clip.event_start == start - 1
                assert start <= (n + 1) // 2
                # Entering: not visible in the frame before the labelled start.
                assert start == 1 or not visible[start - 2]


def test_first_test_clip_is_normal_and_every_kind_appears(small_store):
    root, names = small_store
    for name in names:
        rows = read_labels(root / name)
        assert "test_001" not in {r["clip"] for r in rows}
        assert sorted({r["kind"] for r in rows}) == sorted(ANOMALY_KINDS)
        assert len({r["clip"] for r in rows}) == 3
    assert [anomaly_kind_for_test_clip(i) for i in range(1, 8)] == [
        None,
        "fast_object",
        "vehicle",
        "wrong_way_crossing",
        "fast_object",
        "vehicle",
        "wrong_way_crossing",
    ]


def test_frames_to_intervals():
    assert frames_to_intervals([]) == []
    assert frames_to_intervals([False, False]) == []
    assert frames_to_intervals([True]) == [(1, 1)]
    assert frames_to_intervals([False, True, True, False, True]) == [(2, 3), (5, 5)]
    assert frames_to_intervals(np.array([True, True, False])) == [(1, 2)]


# ---------------------------------------------------------------------------------------------
# Scene sanity
# ---------------------------------------------------------------------------------------------
def test_anomaly_region_differs_from_background_more_than_normal_frames():
    scene = build_scene(4, 2, 72, 96)
    n = 40
    normal = render_clip(scene, 4, "test", 1, n, None, location_index=2)
    assert not normal.anomaly_mask.any()
    for ci in (2, 3, 4):
        clip = render_clip(
            scene, 4, "test", ci, n, anomaly_kind_for_test_clip(ci), location_index=2
        )
        anom, norm = [], []
        for t in np.flatnonzero(clip.anomalous_frames):
            m = clip.anomaly_mask[t]
            anom.append(np.abs(clip.frames[t].astype(np.float32) - scene.background)[m].mean())
            norm.append(np.abs(normal.frames[t].astype(np.float32) - scene.background)[m].mean())
        assert np.mean(anom) > 2.0 * np.mean(norm), clip.kind


def test_static_camera_with_noise_and_walking_people():
    scene = build_scene(0, 0, 72, 96)
    clips = [render_clip(scene, 0, "train", ci, 40, None) for ci in (1, 2, 3)]
    frames = np.concatenate([c.frames for c in clips]).astype(np.float32)
    diff = frames - scene.background
    # Camera noise on every frame: a few grey levels, not zero.
    noise_sd = np.median(np.abs(diff)) / 0.6745
    assert 2.0 < noise_sd < 6.0
    # Static background: the per-pixel median over time is the background.
    median_err = np.abs(np.median(frames, axis=0) - scene.background)
    assert np.mean(median_err < 6.0) > 0.97
    # People walk: some pixels depart strongly from the background, and they move.
    blobs = (np.abs(diff).max(axis=-1) > 40).reshape(len(frames), -1)
    assert blobs.any(axis=1).mean() > 0.3
    ts = np.flatnonzero(blobs.any(axis=1))
    assert any(not np.array_equal(blobs[a], blobs[b]) for a, b in itertools.pairwise(ts))


# ---------------------------------------------------------------------------------------------
# Refusing to overwrite
# ---------------------------------------------------------------------------------------------
def test_refuses_to_write_into_an_existing_non_empty_location(tmp_path):
    existing = tmp_path / "demo-campus"
    existing.mkdir()
    keep = existing / "keep.txt"
    keep.write_text("precious")
    with pytest.raises(ValueError, match="demo-campus") as info:
        write_demo_datastore(tmp_path, progress=False, **TINY)
    assert "\n" not in str(info.value)
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-campus"]  # nothing written
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_an_existing_empty_location_folder_is_used(tmp_path):
    (tmp_path / "demo-plaza").mkdir()
    assert write_demo_datastore(tmp_path, locations=1, progress=False, **TINY) == ["demo-plaza"]
    assert (tmp_path / "demo-plaza" / "test" / "labels.csv").is_file()


def test_ucsd_writer_refuses_non_empty_location(tmp_path):
    loc = tmp_path / "UCSDped_synth"
    loc.mkdir()
    (loc / "x").write_text("x")
    with pytest.raises(ValueError, match="UCSDped_synth"):
        write_ucsd_style_location(tmp_path)
    assert [p.name for p in loc.iterdir()] == ["x"]


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_demo_datastore(tmp_path, height=4, progress=False)
    with pytest.raises(ValueError):
        write_demo_datastore(tmp_path, seed=-1, progress=False)


def test_video_readback_mismatch_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_count_video_frames", lambda path: (1, (8, 8)))
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(RuntimeError, match="reads back"):
        demo._write_video(tmp_path / "x.avi", frames)


# ---------------------------------------------------------------------------------------------
# UCSD-style location
# ---------------------------------------------------------------------------------------------
GT_LINE = re.compile(r"^TestVideoFile\{end\+1\}\.gt_frame = \[(.*)\];$")


def read_grey_clip(folder: Path) -> np.ndarray:
    files = sorted(folder.iterdir())
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]).astype(np.float32)


def parse_ucsd_m(text: str) -> list[list[tuple[int, int]]]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[0] == "TestVideoFile = {};"
    out = []
    for line in lines[1:]:
        m = GT_LINE.match(line)
        assert m, line
        body = m.group(1).strip()
        spans = []
        for part in filter(None, (p.strip() for p in body.split(","))):
            a, b = part.split(":")
            spans.append((int(a), int(b)))
        out.append(spans)
    return out


def test_ucsd_style_layout(ucsd_location):
    loc = ucsd_location
    assert loc.name == "UCSDped_synth"
    assert (loc / "README.txt").is_file()
    assert (loc / "Train" / ".DS_Store").is_file()
    train = sorted(p.name for p in (loc / "Train").iterdir() if p.is_dir())
    assert train == ["Train001", "Train002", "Train003"]
    test_dirs = sorted(p.name for p in (loc / "Test").iterdir() if p.is_dir())
    assert test_dirs == ["Test001", "Test001_gt", "Test002", "Test002_gt"]
    assert sorted(p.name for p in (loc / "Test").iterdir() if p.is_file()) == ["UCSDped_synth.m"]
    for clip in [*(loc / "Train").glob("Train0*"), *(loc / "Test").glob("Test00[0-9]")]:
        files = sorted(clip.iterdir())
        assert [f.name for f in files] == [f"{i:03d}.tif" for i in range(1, 41)]
        img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (79, 119) and img.dtype == np.uint8
    for gt in (loc / "Test").glob("*_gt"):
        assert [f.name for f in sorted(gt.iterdir())] == [f"{i:03d}.bmp" for i in range(1, 41)]


def test_ucsd_m_file_matches_the_pixel_masks(ucsd_location):
    loc = ucsd_location
    parsed = parse_ucsd_m((loc / "Test" / "UCSDped_synth.m").read_text())
    assert len(parsed) == 2  # one line per test clip, in clip order
    for ci, spans in enumerate(parsed, start=1):
        assert spans, f"Test{ci:03d} must contain an anomaly"
        gt = sorted((loc / "Test" / f"Test{ci:03d}_gt").iterdir())
        masks = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in gt])
        assert set(np.unique(masks)) <= {0, 255}
        assert spans == frames_to_intervals(masks.reshape(len(masks), -1).any(axis=1))
        # The masked pixels are where the test frames differ from the normal scene.
        frames = read_grey_clip(loc / "Test" / f"Test{ci:03d}")
        bg = np.median(read_grey_clip(loc / "Train" / "Train001"), axis=0)
        on = masks > 0
        assert np.abs(frames - bg)[on].mean() > 2.0 * np.abs(frames - bg)[~on].mean()


def test_ucsd_frames_and_masks_are_the_rendered_clips(ucsd_location):
    loc = ucsd_location
    scene = build_scene(2, 0, 79, 119)
    for ci in (1, 2):
        kind = anomaly_kind_for_test_clip(ci, first_is_normal=False)
        clip = render_clip(scene, 2, "test", ci, 40, kind, location_index=demo.UCSD_STREAM_INDEX)
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip.frames])
        assert np.array_equal(read_grey_clip(loc / "Test" / f"Test{ci:03d}"), grey)
        masks = read_grey_clip(loc / "Test" / f"Test{ci:03d}_gt") > 0
        assert np.array_equal(masks, clip.anomaly_mask)
    kinds = [anomaly_kind_for_test_clip(i, first_is_normal=False) for i in (1, 2, 3, 4)]
    assert kinds == [*ANOMALY_KINDS, ANOMALY_KINDS[0]]
