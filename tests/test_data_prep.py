"""data_prep: layouts, clip forms, labels, bad clips, the split and the fingerprint."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import moving_square_frames, tree_digest, write_frame_folder, write_video

from videoanom.data.dataset import load_split, window_starts
from videoanom.data.datastore import DatastoreError, FileInfo, LocalDatastore, open_datastore
from videoanom.data.frames import natural_key, to_model_input
from videoanom.data.layout import discover_layout
from videoanom.data.prepare import (
    DataPrepError,
    PrepConfig,
    load_manifest,
    prepare_location,
    split_train_val,
)


def prep(root: Path, location: str, out: Path, **config) -> dict:
    prepare_location(LocalDatastore(root), location, out, PrepConfig(**config))
    return json.loads((out / "manifest.json").read_text())


class TestLayoutDiscovery:
    def test_frame_folders_videos_labels_and_ignored_files(self) -> None:
        files = [
            FileInfo(p, 1, "v")
            for p in [
                "train/c10/f1.png",
                "train/c2/f10.png",
                "train/c2/f2.png",
                "train/c2/Thumbs.db",
                "train/v1.mp4",
                "test/t1.avi",
                "test/labels.csv",
                "test/t1_gt/001.bmp",
                "README.txt",
                "_READY",
                "train/.DS_Store",
            ]
        ]
        layout = discover_layout(files)
        assert [c.name for c in layout.train] == ["c2", "c10", "v1"]
        assert layout.train[0].files == ["train/c2/f2.png", "train/c2/f10.png"]
        assert layout.train[2].form == "video"
        assert [c.name for c in layout.test] == ["t1"]
        assert layout.labels_csv == "test/labels.csv"
        assert layout.mask_folders == ["test/t1_gt"]
        ignored = {p for p, _ in layout.ignored}
        assert ignored == {"train/c2/Thumbs.db", "README.txt", "train/.DS_Store"}

    def test_natural_order(self) -> None:
        names = ["f10.png", "f2.png", "f1.png"]
        assert sorted(names, key=natural_key) == ["f1.png", "f2.png", "f10.png"]


def test_resize_then_centre_crop_keeps_aspect() -> None:
    frame = np.zeros((158, 238, 3), np.uint8)
    frame[:, 119:] = 255  # right half white
    out = to_model_input(frame, 64, 80, 1)
    assert out.shape == (64, 80, 1)
    # 158x238 scales to 64x96, cropped 8 px each side: the edge stays in the middle.
    assert out[:, :35].max() == 0 and out[:, 45:].min() == 255


def test_mixed_forms_labels_and_split(mixed_location: Path, tmp_path: Path) -> None:
    before = tree_digest(mixed_location)
    manifest = prep(mixed_location, "cam-1", tmp_path / "out", height=16, width=24, channels=1)
    assert tree_digest(mixed_location) == before, "the datastore must never be modified"

    data = tmp_path / "out" / "data.h5"
    train, val, test = (load_split(data, s) for s in ("train", "val", "test"))
    assert train.frames.shape[1:] == (16, 24, 1) and train.frames.dtype == np.uint8
    assert len(val.clips) == 1 and len(train.clips) == 3
    assert not set(train.clips) & set(val.clips), "a clip is on both sides of the split"
    assert set(train.clips) | set(val.clips) == {"clip1", "clip2", "clip3", "clip10"}
    assert test.clips == ["t1", "t2"]
    t2 = test.label[test.clip == 1]
    assert t2.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 1, 0]
    assert (test.label[test.clip == 0] == 0).all(), "a test clip without rows is normal"
    assert test.frame[test.clip == 1].tolist() == list(range(1, 11))
    assert manifest["has_labels"] and manifest["label_source"] == "test/labels.csv"
    assert {i["path"] for i in manifest["ignored"]} == {"README.txt"}
    assert len(manifest["fingerprint"]) == 64


def test_colour_mode(mixed_location: Path, tmp_path: Path) -> None:
    prep(mixed_location, "cam-1", tmp_path / "out", height=16, width=24, channels=3)
    assert load_split(tmp_path / "out" / "data.h5", "train").frames.shape[1:] == (16, 24, 3)


def test_fingerprint_is_stable_and_follows_content(mixed_location: Path, tmp_path: Path) -> None:
    first = prep(mixed_location, "cam-1", tmp_path / "a")["fingerprint"]
    assert prep(mixed_location, "cam-1", tmp_path / "b")["fingerprint"] == first
    frame = mixed_location / "cam-1" / "train" / "clip1" / "frame_3.png"
    frame.write_bytes((mixed_location / "cam-1" / "train" / "clip2" / "frame_3.png").read_bytes())
    assert prep(mixed_location, "cam-1", tmp_path / "c")["fingerprint"] != first


def test_unlabelled_location_marks_test_frames_unknown(
    mixed_location: Path, tmp_path: Path
) -> None:
    (mixed_location / "cam-1" / "test" / "labels.csv").unlink()
    manifest = prep(mixed_location, "cam-1", tmp_path / "out")
    assert not manifest["has_labels"]
    assert (load_split(tmp_path / "out" / "data.h5", "test").label == -1).all()


def test_bad_clips_are_reported_by_name_and_skipped(
    mixed_location: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = mixed_location / "cam-1" / "train"
    (train / "clip2" / "frame_5.png").write_bytes(b"not a png")
    write_frame_folder(train / "odd", moving_square_frames(3) + moving_square_frames(2, height=40))
    (train / "broken.mp4").write_bytes(b"\x00" * 100)
    (train / "empty").mkdir()  # no files at all: not even seen as a clip
    with caplog.at_level(logging.WARNING):
        manifest = prep(mixed_location, "cam-1", tmp_path / "out")
    reasons = {s["clip"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"clip2", "odd", "broken"}
    assert "frame_5.png cannot be decoded" in reasons["clip2"]
    assert "64x40 but earlier frames are 64x48" in reasons["odd"]
    assert "broken.mp4" in reasons["broken"]
    assert "skipping train clip clip2" in caplog.text
    kept = set(load_split(tmp_path / "out" / "data.h5", "train").clips)
    kept |= set(load_split(tmp_path / "out" / "data.h5", "val").clips)
    assert kept == {"clip1", "clip3", "clip10"}


def test_location_without_usable_train_clip_fails_clearly(tmp_path: Path) -> None:
    loc = tmp_path / "store" / "cam"
    (loc / "train" / "a").mkdir(parents=True)
    (loc / "train" / "a" / "1.png").write_bytes(b"garbage")
    with pytest.raises(DataPrepError, match=r"no usable train clip \(a: 1.png cannot be decoded"):
        prep(tmp_path / "store", "cam", tmp_path / "out")
    (loc / "train" / "a" / "1.png").unlink()
    with pytest.raises(DataPrepError, match="no train clips found"):
        prep(tmp_path / "store", "cam", tmp_path / "out")


def test_ucsd_layout_with_m_ground_truth(tmp_path: Path) -> None:
    loc = tmp_path / "store" / "UCSDped2"
    for i in (1, 2):
        write_frame_folder(
            loc / "Train" / f"Train00{i}", moving_square_frames(12, seed=i), ".tif", "{:03d}"
        )
    for i in (1, 2):
        write_frame_folder(
            loc / "Test" / f"Test00{i}", moving_square_frames(10, seed=5 + i), ".tif", "{:03d}"
        )
    write_frame_folder(loc / "Test" / "Test001_gt", moving_square_frames(10), ".bmp", "{:03d}")
    (loc / "Test" / "UCSDped2.m").write_text(
        "TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [3:4];\n"
        "TestVideoFile{end+1}.gt_frame = [1:2, 9:10];\n"
    )
    shutil.copy(loc / "Test" / "UCSDped2.m", loc / "README.txt")
    manifest = prep(tmp_path / "store", "UCSDped2", tmp_path / "out")
    test = load_split(tmp_path / "out" / "data.h5", "test")
    assert test.clips == ["Test001", "Test002"], "the _gt mask folder is not a clip"
    assert test.label[test.clip == 0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert test.label[test.clip == 1].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    assert manifest["label_source"] == "Test/UCSDped2.m"


def test_single_train_clip_is_split_in_time(tmp_path: Path) -> None:
    loc = tmp_path / "store" / "cam"
    write_video(loc / "train" / "long.avi", moving_square_frames(20))
    prep(tmp_path / "store", "cam", tmp_path / "out")
    train = load_split(tmp_path / "out" / "data.h5", "train")
    val = load_split(tmp_path / "out" / "data.h5", "val")
    assert train.clips == ["long"] and val.clips == ["long@val"]
    assert train.frame.max() < val.frame.min()
    assert len(train) + len(val) == 20


def test_split_is_whole_clips_and_deterministic() -> None:
    clips = [(f"c{i}", np.zeros((5, 2, 2, 1)), np.arange(1, 6)) for i in range(10)]
    train, val = split_train_val(clips, 0.2, seed=3)
    again = split_train_val(clips, 0.2, seed=3)[1]
    assert [c[0] for c in val] == [c[0] for c in again]
    assert len(val) == 2 and len(train) == 8


def test_window_starts_stay_inside_one_clip() -> None:
    clip = np.array([0, 0, 0, 0, 1, 1, 1])
    frame = np.array([1, 2, 3, 4, 1, 2, 3])
    assert window_starts(clip, frame, 3).tolist() == [0, 1, 4]
    assert window_starts(clip, frame, 3, stride=3).tolist() == [0, 4]
    assert window_starts(clip, frame, 8).tolist() == []


def test_hdf5_records_fingerprint_and_shape(mixed_location: Path, tmp_path: Path) -> None:
    manifest = prep(mixed_location, "cam-1", tmp_path / "out")
    with h5py.File(tmp_path / "out" / "data.h5") as handle:
        assert handle.attrs["fingerprint"] == manifest["fingerprint"]
        assert handle.attrs["location"] == "cam-1"
        assert handle["train/frames"].shape[1:] == (64, 80, 1)


def test_datastore_uri_errors(tmp_path: Path) -> None:
    with pytest.raises(DatastoreError, match="unknown datastore scheme"):
        open_datastore("s3://bucket")
    with pytest.raises(DatastoreError, match="does not exist"):
        open_datastore(tmp_path / "missing").list_locations()
    with pytest.raises(DatastoreError, match="not found"):
        LocalDatastore(tmp_path).list_files("nope")


def test_anomaly_kinds_from_labels_csv_reach_the_manifest(
    mixed_location: Path, tmp_path: Path
) -> None:
    labels = mixed_location / "cam-1" / "test" / "labels.csv"
    labels.write_text("clip,start_frame,end_frame,kind\nt2,3,5,vehicle\nt2,9,9,vehicle\n")
    prepare_location(LocalDatastore(mixed_location), "cam-1", tmp_path / "out", PrepConfig())
    manifest = load_manifest(tmp_path / "out")
    assert manifest.clip_kind("t2") == "vehicle"
    assert manifest.clip_kind("t1") == ""
