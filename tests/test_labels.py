import pytest

from videoanom.data.labels import ClipLabels, LabelFileError, parse_labels_csv, parse_ucsd_m


def test_labels_csv_intervals_are_one_based_and_inclusive() -> None:
    labels = parse_labels_csv("clip,start_frame,end_frame\nA,2,3\nA,5,5\nB,1,1\n")
    assert labels["A"].intervals == [(2, 3), (5, 5)]
    assert labels["A"].frame_mask(6) == [0, 1, 1, 0, 1, 0]
    assert labels["B"].frame_mask(2) == [1, 0]


def test_labels_csv_keeps_extra_kind_column_and_tolerates_spaces_and_bom() -> None:
    labels = parse_labels_csv("clip, start_frame, end_frame, kind\nA, 1, 2, vehicle\n")
    assert labels["A"].intervals == [(1, 2)]
    assert labels["A"].kinds == ["vehicle"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clip,start\nA,1\n", "missing start_frame,end_frame"),
        (
            "clip,start_frame,end_frame\nA,x,3\n",
            "labels.csv:2: start_frame 'x' is not a whole number",
        ),
        (
            "clip,start_frame,end_frame\nA,5,3\n",
            "labels.csv:2: end_frame 3 is before start_frame 5",
        ),
        ("clip,start_frame,end_frame\nA,0,3\n", "must be >= 1"),
        ("clip,start_frame,end_frame\n,1,3\n", "empty clip name"),
    ],
)
def test_bad_labels_csv_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(LabelFileError, match=message.replace("(", r"\(")):
        parse_labels_csv(text, source="labels.csv")


def test_ucsd_m_ranges_in_clip_order() -> None:
    text = (
        "TestVideoFile = {};\n"
        "TestVideoFile{end+1}.gt_frame = [61:180];\n"
        "TestVideoFile{end+1}.gt_frame = [5:90, 140:200];\n"
        "TestVideoFile{end+1}.gt_frame = [7];\n"
    )
    clips = parse_ucsd_m(text)
    assert [c.intervals for c in clips] == [[(61, 180)], [(5, 90), (140, 200)], [(7, 7)]]


def test_ucsd_m_errors() -> None:
    with pytest.raises(LabelFileError, match="no 'gt_frame"):
        parse_ucsd_m("nothing here", source="x.m")
    with pytest.raises(LabelFileError, match=r"x\.m:1: cannot read range"):
        parse_ucsd_m("TestVideoFile{end+1}.gt_frame = [a:b];", source="x.m")


def test_frame_mask_clips_intervals_to_clip_length() -> None:
    assert ClipLabels([(3, 10)]).frame_mask(4) == [0, 0, 1, 1]
