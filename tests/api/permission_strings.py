"""conda-store's permission strings and roles, written out here (not imported from envstore) so the
tests check the wire contract (conda-store-api.md §4.2, §4.3), not envstore against itself."""

VIEWER = sorted(["environment::read", "namespace::read", "namespace-role-mapping::read"])
EDITOR = sorted(
    [*VIEWER, "build::cancel", "environment:create", "environment::update", "environment::solve", "setting::read"]
)
ADMIN = sorted(
    [
        *EDITOR,
        "build::delete",
        "environment::delete",
        "namespace::create",
        "namespace::update",
        "namespace::delete",
        "namespace-role-mapping::create",
        "namespace-role-mapping::update",
        "namespace-role-mapping::delete",
        "setting::update",
    ]
)
assert len(ADMIN) == 17
