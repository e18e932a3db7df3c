"""Settings read from ENVSTORE_* and specifications validated with messages that say what to fix."""

import pytest

from envstore.common.settings import EnvstoreSettings
from envstore.common.specification import (
    SpecificationError,
    load_environment_specification,
    parse_specification_text,
)


def test_list_settings_accept_comma_separated_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVSTORE_CONDA_ALLOWED_CHANNELS", "conda-forge, bioconda")
    monkeypatch.setenv("ENVSTORE_CONDA_DEFAULT_CHANNELS", '["conda-forge"]')
    settings = EnvstoreSettings()
    assert settings.conda_allowed_channels == ["conda-forge", "bioconda"]
    assert settings.conda_default_channels == ["conda-forge"]


def test_unknown_artifact_kind_in_settings_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVSTORE_BUILD_ARTIFACTS", "LOCKFILE,TARBALL")
    with pytest.raises(ValueError, match="TARBALL"):
        EnvstoreSettings()


def test_invalid_yaml_gets_conda_stores_message() -> None:
    with pytest.raises(SpecificationError, match="^Unable to parse. Invalid YAML$"):
        parse_specification_text("name: [unclosed")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"dependencies": ["numpy"]}, "name: is required"),
        ({"name": "bad/name"}, "may only contain"),
        ({"name": "x", "dependencies": ["numpy >>= 1"]}, "'numpy >>= 1' is not a valid conda match spec"),
        ({"name": "x", "dependencies": [{"pip": ["flask >>= 1"]}]}, "pip requirement 'flask >>= 1' is not valid"),
        ({"name": "x", "colour": "blue"}, "colour: is not a known field"),
    ],
)
def test_invalid_specifications_say_what_to_fix(document: dict, expected: str) -> None:
    with pytest.raises(SpecificationError, match=expected.replace("(", r"\(")):
        load_environment_specification(document)


def test_valid_specification_normalizes_to_conda_stores_shape() -> None:
    specification = load_environment_specification(
        {"name": "tools", "dependencies": ["hello", {"pip": ["flask"]}], "variables": {"A": "1"}}
    )
    assert specification.normalized() == {
        "name": "tools",
        "channels": [],
        "dependencies": ["hello", {"pip": ["flask"]}],
        "variables": {"A": "1"},
        "prefix": None,
        "description": "",
    }
    assert specification.conda_dependencies == ["hello"]
    assert specification.pip_dependencies == ["flask"]
