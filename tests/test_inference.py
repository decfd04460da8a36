"""Input discovery and frame prefetching for ``videoanom score``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import moving_square_frames, write_frame_folder, write_video

from videoanom.data.frames import ClipReadError
from videoanom.scoring.inference import find_input_clips, prefetch


def test_prefetch_keeps_order_and_surfaces_errors() -> None:
    assert list(prefetch(range(1000), size=8)) == list(range(1000))

    def broken():
        yield 1
        raise ClipReadError("frame 2 cannot be decoded")

    stream = prefetch(broken())
    assert next(stream) == 1
    with pytest.raises(ClipReadError, match="frame 2"):
        next(stream)


def test_prefetch_stops_its_producer_when_abandoned() -> None:
    pulled = []

    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield i
            i += 1

    stream = prefetch(endless(), size=4)
    assert next(stream) == 0
    stream.close()
    seen = len(pulled)
    assert seen <= 4 + 2, "the producer may only run a bounded distance ahead"


def test_input_forms(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", moving_square_frames(5))
    assert [(c.name, c.form) for c in find_input_clips(video)] == [("cam", "video")]
    folder = write_frame_folder(tmp_path / "one", moving_square_frames(3))
    assert [(c.name, c.form) for c in find_input_clips(folder)] == [("one", "frames")]
    clips = tmp_path / "many"
    write_frame_folder(clips / "c10", moving_square_frames(3))
    write_frame_folder(clips / "c2", moving_square_frames(3))
    write_video(clips / "c3.mp4", moving_square_frames(3), fourcc="mp4v")
    (clips / "notes.txt").write_text("ignored")
    assert [c.name for c in find_input_clips(clips)] == ["c2", "c3", "c10"]
    with pytest.raises(ValueError, match="not a video file"):
        find_input_clips(clips / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video files or frame folders"):
        find_input_clips(tmp_path / "empty")
