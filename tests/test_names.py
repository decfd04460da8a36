import pytest

from videoanom.names import (
    InvalidLocationName,
    classifier_model_name,
    normalise_location,
    prednet_model_name,
    validate_location,
)


@pytest.mark.parametrize(
    ("name", "slug"),
    [("UCSDped1", "ucsdped1"), ("Camera 7 (North)", "camera-7-north"), ("a__b--c", "a-b-c")],
)
def test_normalise_maps_to_registry_alphabet(name: str, slug: str) -> None:
    assert normalise_location(name) == slug
    assert prednet_model_name(name) == f"prednet-{slug}"
    assert classifier_model_name(name) == f"anomaly-classifier-{slug}"


@pytest.mark.parametrize(
    "name", ["..", "../etc", "a/b", "a\\b", ".hidden", "", "cam\x00", "tab\tname"]
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidLocationName):
        validate_location(name)


def test_name_without_letters_or_digits_cannot_name_a_model() -> None:
    with pytest.raises(InvalidLocationName, match="no letters or digits"):
        validate_location("___")
