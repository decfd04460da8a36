"""Readiness of a location's upload: marker, train clips and a quiet listing."""

from __future__ import annotations

from ml_service.master.readiness import Readiness, check_ready, listing_signature
from videoanom.data.datastore import FileInfo

QUIET = 300.0


def _clip_files(version: str = "v1") -> list[FileInfo]:
    return [
        FileInfo("train/clip01/frame_1.png", 100, version),
        FileInfo("train/clip01/frame_2.png", 100, version),
        FileInfo("test/clip02.mp4", 500, version),
    ]


def test_marker_makes_ready_immediately() -> None:
    files = [*_clip_files(), FileInfo("_READY", 0, "m")]
    verdict, seen = check_ready(files, now=1000.0, quiet_seconds=QUIET)
    assert verdict.ready
    assert "_READY" in verdict.reason
    assert seen == {"signature": listing_signature(files), "since": 1000.0}


def test_marker_without_train_clip_is_not_ready() -> None:
    files = [FileInfo("_READY", 0, "m"), FileInfo("test/clip02.mp4", 500, "v")]
    verdict, _ = check_ready(files, now=1000.0, quiet_seconds=QUIET)
    assert not verdict.ready
    assert "no train clip" in verdict.reason


def test_nested_marker_does_not_count() -> None:
    files = [*_clip_files(), FileInfo("train/_READY", 0, "m")]
    verdict, _ = check_ready(files, now=1000.0, quiet_seconds=QUIET)
    assert not verdict.ready


def test_no_train_clip_is_never_ready() -> None:
    files = [FileInfo("test/clip02.mp4", 500, "v")]
    verdict, seen = check_ready(files, now=0.0, quiet_seconds=QUIET)
    verdict, _ = check_ready(files, now=10_000.0, quiet_seconds=QUIET, last_seen=seen)
    assert verdict == Readiness(False, "no train clip yet")
    empty, _ = check_ready([], now=0.0, quiet_seconds=QUIET)
    assert not empty.ready


def test_first_sight_waits_for_quiet_period() -> None:
    verdict, seen = check_ready(_clip_files(), now=1000.0, quiet_seconds=QUIET)
    assert not verdict.ready
    assert "first seen" in verdict.reason
    assert seen["since"] == 1000.0


def test_unchanged_listing_becomes_ready_after_quiet_period() -> None:
    files = _clip_files()
    _, seen = check_ready(files, now=1000.0, quiet_seconds=QUIET)
    verdict, seen = check_ready(files, now=1100.0, quiet_seconds=QUIET, last_seen=seen)
    assert not verdict.ready
    assert verdict.reason == "changed 100 s ago (quiet period 300 s)"
    assert seen["since"] == 1000.0
    verdict, seen = check_ready(files, now=1400.0, quiet_seconds=QUIET, last_seen=seen)
    assert verdict == Readiness(True, "ready: 1 train clips, unchanged for 400 s")
    assert seen["since"] == 1000.0


def test_changed_version_resets_the_clock() -> None:
    _, seen = check_ready(_clip_files("v1"), now=1000.0, quiet_seconds=QUIET)
    verdict, seen = check_ready(_clip_files("v2"), now=1250.0, quiet_seconds=QUIET, last_seen=seen)
    assert not verdict.ready
    assert "changed since last poll" in verdict.reason
    assert seen["since"] == 1250.0
    verdict, _ = check_ready(_clip_files("v2"), now=1400.0, quiet_seconds=QUIET, last_seen=seen)
    assert not verdict.ready
    verdict, _ = check_ready(_clip_files("v2"), now=1550.0, quiet_seconds=QUIET, last_seen=seen)
    assert verdict.ready


def test_file_outside_train_and_test_still_counts_as_change() -> None:
    files = _clip_files()
    _, seen = check_ready(files, now=1000.0, quiet_seconds=QUIET)
    with_readme = [*files, FileInfo("README.txt", 10, "r")]
    verdict, seen = check_ready(with_readme, now=1400.0, quiet_seconds=QUIET, last_seen=seen)
    assert not verdict.ready
    assert seen["since"] == 1400.0


def test_size_change_and_removal_count_as_change() -> None:
    files = _clip_files()
    _, seen = check_ready(files, now=0.0, quiet_seconds=QUIET)
    grown = [FileInfo(f.path, f.size + 1, f.version) for f in files]
    _, seen2 = check_ready(grown, now=500.0, quiet_seconds=QUIET, last_seen=seen)
    assert seen2["since"] == 500.0
    _, seen3 = check_ready(files[1:], now=600.0, quiet_seconds=QUIET, last_seen=seen)
    assert seen3["since"] == 600.0


def test_listing_order_does_not_matter() -> None:
    files = _clip_files()
    assert listing_signature(files) == listing_signature(list(reversed(files)))


def test_corrupt_last_seen_counts_as_first_sight() -> None:
    verdict, seen = check_ready(
        _clip_files(), now=1000.0, quiet_seconds=QUIET, last_seen={"since": "x"}
    )
    assert not verdict.ready
    assert seen["since"] == 1000.0
