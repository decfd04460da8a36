"""Finding the clips and label files of a location from its file list.

Two layouts are accepted (CONTRACT section 1): the project's ``train/`` + ``test/`` with
frame folders or video files and ``test/labels.csv``, and UCSD's ``Train/TrainNNN`` +
``Test/TestNNN`` with ``Test/<name>.m`` ground truth and ``TestNNN_gt`` mask folders.
Anything else is reported as ignored rather than guessed at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from videoanom.data.datastore import FileInfo
from videoanom.data.frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, natural_key

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
MARKER_FILES = frozenset({"_READY"})


@dataclass
class Clip:
    """One clip: a folder of frame files, or one video file."""

    name: str
    split: str
    form: str  # "frames" or "video"
    files: list[str]

    @property
    def source(self) -> str:
        """The clip's folder or file, relative to the location."""
        if self.form == "video":
            return self.files[0]
        return str(PurePosixPath(self.files[0]).parent)


@dataclass
class LocationLayout:
    """What a location holds, as found from its file listing."""

    train: list[Clip] = field(default_factory=list)
    test: list[Clip] = field(default_factory=list)
    labels_csv: str | None = None
    ucsd_m: list[str] = field(default_factory=list)
    mask_folders: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def clips(self, split: str) -> list[Clip]:
        return self.train if split == "train" else self.test

    @property
    def files_used(self) -> list[str]:
        """Every file that data_prep reads (clips and label files), for the fingerprint."""
        used = [f for clip in self.train + self.test for f in clip.files]
        if self.labels_csv:
            used.append(self.labels_csv)
        used.extend(self.ucsd_m)
        return sorted(used)


def discover_layout(files: list[FileInfo]) -> LocationLayout:
    """Sort a location's files into clips, label files and ignored files."""
    layout = LocationLayout()
    frame_folders: dict[tuple[str, str], list[str]] = {}
    videos: dict[tuple[str, str], str] = {}
    masks: set[str] = set()
    for info in files:
        parts = PurePosixPath(info.path).parts
        split = parts[0].lower() if len(parts) > 1 else ""
        if split not in SPLITS:
            if parts[-1] not in MARKER_FILES:
                layout.ignored.append((info.path, "not under train/ or test/"))
            continue
        name = parts[-1]
        ext = PurePosixPath(name).suffix.lower()
        if name.startswith("."):
            layout.ignored.append((info.path, "hidden file"))
        elif len(parts) == 2:
            _classify_split_file(layout, videos, info.path, split, name, ext)
        elif len(parts) == 3 and parts[1].lower().endswith("_gt"):
            masks.add(f"{parts[0]}/{parts[1]}")
        elif len(parts) == 3 and ext in IMAGE_EXTENSIONS:
            frame_folders.setdefault((split, parts[1]), []).append(info.path)
        elif len(parts) == 3:
            layout.ignored.append((info.path, "not an image file"))
        else:
            layout.ignored.append((info.path, "nested too deep (clips are split/clip/frame)"))

    for (split, clip_name), paths in frame_folders.items():
        paths.sort(key=natural_key)
        layout.clips(split).append(Clip(clip_name, split, "frames", paths))
    for (split, clip_name), path in videos.items():
        if (split, clip_name) in frame_folders:
            layout.ignored.append((path, f"a frame folder named {clip_name!r} already exists"))
            continue
        layout.clips(split).append(Clip(clip_name, split, "video", [path]))
    for split in SPLITS:
        layout.clips(split).sort(key=lambda clip: natural_key(clip.name))
    layout.mask_folders = sorted(masks, key=natural_key)
    layout.ucsd_m.sort(key=natural_key)
    if layout.ignored:
        shown = ", ".join(f"{path} ({why})" for path, why in layout.ignored[:5])
        more = f" and {len(layout.ignored) - 5} more" if len(layout.ignored) > 5 else ""
        logger.warning("ignored %d file(s) not understood: %s%s", len(layout.ignored), shown, more)
    return layout


def _classify_split_file(
    layout: LocationLayout,
    videos: dict[tuple[str, str], str],
    path: str,
    split: str,
    name: str,
    ext: str,
) -> None:
    """A file directly under train/ or test/: a video clip, a label file, or ignored."""
    if ext in VIDEO_EXTENSIONS:
        videos[(split, PurePosixPath(name).stem)] = path
    elif split == "test" and name.lower() == "labels.csv":
        layout.labels_csv = path
    elif split == "test" and ext == ".m":
        layout.ucsd_m.append(path)
    elif ext in IMAGE_EXTENSIONS:
        layout.ignored.append((path, "frame files must be inside a clip folder"))
    else:
        layout.ignored.append((path, "not a video, clip folder or label file"))
