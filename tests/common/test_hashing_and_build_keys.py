"""Spec hashes and build keys as conda-store computes them (values from its documentation)."""

from envstore.common.build_keys import build_id_from_key, build_key
from envstore.common.hashing import recursive_sort, specification_sha256

SPEC_SHA = "c7afdeffbe2bda7d16ca69beecc8bebeb29280a95d4f3ed92849e4047710923b"
NAME = "this-is-a-long-environment-name"


def test_build_keys_match_conda_stores_documented_examples() -> None:
    # conda-store-api.md §2.2 gives these three keys for build 12345678 of that spec.
    assert build_key(1, SPEC_SHA, 1699156450.510258, 12345678, NAME, "pytest") == (
        f"{SPEC_SHA}-20231105-035410-510258-12345678-{NAME}"
    )
    assert build_key(2, SPEC_SHA, 1699156450.9, 12345678, NAME, "pytest") == f"c7afdeff-1699156450-12345678-{NAME}"
    assert build_key(3, SPEC_SHA, 1699156450, 12345678, NAME, "pytest") == "c1f206a26263e1166e5b43548f69aa0c"


def test_build_id_is_read_back_from_v1_and_v2_keys_even_with_dashes_in_the_name() -> None:
    assert build_id_from_key(f"c7afdeff-1699156450-42-{NAME}") == 42
    assert build_id_from_key(f"{SPEC_SHA}-20231105-035410-510258-42-{NAME}") == 42
    assert build_id_from_key("c1f206a26263e1166e5b43548f69aa0c") is None


def test_spec_hash_ignores_key_and_list_order_like_conda_store() -> None:
    first = {"name": "x", "channels": ["b", "a"], "dependencies": ["numpy", {"pip": ["flask"]}, "python"]}
    second = {"dependencies": [{"pip": ["flask"]}, "python", "numpy"], "channels": ["a", "b"], "name": "x"}
    assert specification_sha256(first) == specification_sha256(second)
    assert specification_sha256(first) != specification_sha256({**first, "name": "y"})


def test_recursive_sort_orders_scalars_by_type_then_value_and_containers_by_type() -> None:
    # conda-store's key: "<type repr>-<value>" for scalars, "<type repr>" for containers, so
    # dicts sort before ints before lists before strings ("<class 'dict'>" < "<class 'int'>" …).
    assert recursive_sort([{"b": 1}, "z", 2, "a", [3, 1]]) == [{"b": 1}, 2, [1, 3], "a", "z"]
