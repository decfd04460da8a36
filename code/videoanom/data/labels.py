"""Frame-level ground truth: the contract's ``labels.csv`` and UCSD's ``.m`` files.

Both give 1-based, inclusive intervals of anomalous frames per test clip. Parsing errors
name the file and the line, because a silently misread label file corrupts every metric.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

REQUIRED_COLUMNS = ("clip", "start_frame", "end_frame")


class LabelFileError(ValueError):
    """A label file that cannot be read as ground truth."""


@dataclass
class ClipLabels:
    """Anomalous intervals of one clip, plus optional per-interval kinds (demo data)."""

    intervals: list[tuple[int, int]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def frame_mask(self, n_frames: int) -> list[int]:
        """0/1 per frame (1-based frame numbers mapped to index ``frame - 1``)."""
        mask = [0] * n_frames
        for start, end in self.intervals:
            for frame in range(max(start, 1), min(end, n_frames) + 1):
                mask[frame - 1] = 1
        return mask


def parse_labels_csv(text: str, source: str = "labels.csv") -> dict[str, ClipLabels]:
    """Parse ``clip,start_frame,end_frame[,kind]`` rows into labels per clip."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        required, absent = ",".join(REQUIRED_COLUMNS), ",".join(missing)
        raise LabelFileError(f"{source}: header must contain {required}; missing {absent}")
    reader.fieldnames = header
    labels: dict[str, ClipLabels] = {}
    for line_no, row in enumerate(reader, start=2):
        clip = (row.get("clip") or "").strip()
        if not clip:
            raise LabelFileError(f"{source}:{line_no}: empty clip name")
        start = _parse_frame(row.get("start_frame"), source, line_no, "start_frame")
        end = _parse_frame(row.get("end_frame"), source, line_no, "end_frame")
        if end < start:
            raise LabelFileError(
                f"{source}:{line_no}: end_frame {end} is before start_frame {start}"
            )
        entry = labels.setdefault(clip, ClipLabels())
        entry.intervals.append((start, end))
        kind = (row.get("kind") or "").strip()
        if kind:
            entry.kinds.append(kind)
    return labels


def _parse_frame(value: str | None, source: str, line_no: int, column: str) -> int:
    try:
        frame = int(str(value).strip())
    except ValueError:
        raise LabelFileError(
            f"{source}:{line_no}: {column} {value!r} is not a whole number"
        ) from None
    if frame < 1:
        raise LabelFileError(
            f"{source}:{line_no}: {column} {frame} must be >= 1 (frames are 1-based)"
        )
    return frame


_GT_LINE = re.compile(r"gt_frame\s*=\s*\[([^\]]*)\]")
_RANGE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+))?\s*$")


def parse_ucsd_m(text: str, source: str = "UCSD.m") -> list[ClipLabels]:
    """Parse UCSD's ``TestVideoFile{end+1}.gt_frame = [61:180];`` lines, in clip order."""
    result: list[ClipLabels] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        match = _GT_LINE.search(line)
        if not match:
            continue
        clip = ClipLabels()
        body = match.group(1).strip()
        for part in filter(None, (p.strip() for p in body.split(","))):
            rng = _RANGE.match(part)
            if not rng:
                raise LabelFileError(f"{source}:{line_no}: cannot read range {part!r}")
            start = int(rng.group(1))
            end = int(rng.group(2) or rng.group(1))
            if start < 1 or end < start:
                raise LabelFileError(f"{source}:{line_no}: bad range {part!r}")
            clip.intervals.append((start, end))
        result.append(clip)
    if not result:
        raise LabelFileError(f"{source}: no 'gt_frame = [...]' lines found")
    return result
