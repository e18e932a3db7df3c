"""conda-store's role and ARN semantics (conda-store-api.md §4)."""

import pytest

from envstore.common.permissions import ADMIN, VIEWER, Principal, arn_matches, is_arn_subset


@pytest.mark.parametrize(
    ("smaller", "larger", "expected"),
    [("a/b", "*/*", True), ("default/*", "*/*", True), ("efault/*", "d*/*", False), ("*/*", "default/*", False),
     ("namespace1/name3", "namespace*/*", True), ("foo/bar", "foo/bar", True)],
)
def test_arn_subset(smaller: str, larger: str, expected: bool) -> None:
    assert is_arn_subset(smaller, larger) is expected


def test_bindings_match_environments_and_bare_namespaces_and_global_only_for_star() -> None:
    assert arn_matches("default/*", "default/env")
    assert arn_matches("default/*", "default")
    assert not arn_matches("default/*", "other/env")
    assert arn_matches("*/*", "")
    assert not arn_matches("default/*", "")
    # Dots are literal (conda-store leaves them unescaped, a wildcard).
    assert not arn_matches("a.b/*", "axb/env")


def test_editor_and_developer_are_one_role_and_later_bindings_replace_earlier() -> None:
    principal = Principal(
        authenticated=True,
        primary_namespace="team",
        role_bindings={"team/*": ["editor"]},
        default_bindings={"default/*": ["viewer"], "team/*": ["viewer"]},
    )
    assert principal.is_allowed("team/env", "environment:create", "build::cancel")
    assert not principal.is_allowed("team/env", "environment::delete")
    assert principal.permissions_on("default/x") == VIEWER


def test_a_token_cannot_cover_more_than_its_holder() -> None:
    viewer = Principal(authenticated=True, primary_namespace="a", role_bindings={"a/*": ["viewer"]})
    assert viewer.covers({"a/*": ["viewer"]})
    assert viewer.covers({"a/env": ["viewer"]})
    assert not viewer.covers({"a/*": ["developer"]})
    assert not viewer.covers({"*/*": ["viewer"]})
    admin = Principal(authenticated=True, primary_namespace="a", role_bindings={"*/*": ["admin"]})
    assert admin.covers({"b/*": ["admin"], "c/d": ["viewer"]})
    assert admin.permissions_on("") == ADMIN
