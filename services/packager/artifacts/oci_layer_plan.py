"""Which packages share a layer: each package alone while the layer budget allows, else the
largest ones alone and the small ones grouped.

Grouping is deterministic and stable: a small package's group is chosen by a hash of its name
(not by its position in a list), so adding or removing one small package changes one group layer,
not all of them; the big packages, whose layers are worth sharing between images, stay alone. (A
new package bigger than the smallest one kept alone takes its place, which then joins a group.)
"""

from __future__ import annotations

import hashlib

from envstore.packager.artifacts.oci_prefix import PackageFiles

LayerGroup = tuple[PackageFiles, ...]

# Past the budget, this share of the package layers holds groups of small packages.
GROUP_SHARE = 4


def plan_layers(packages: tuple[PackageFiles, ...], slots: int) -> list[LayerGroup]:
    """At most ``max(slots, 1)`` groups covering every package, in a stable order."""
    slots = max(slots, 1)
    by_name = sorted(packages, key=lambda package: package.name)
    if len(by_name) <= slots:
        return [(package,) for package in by_name]
    group_count = max(1, min(slots - 1, slots // GROUP_SHARE)) if slots > 1 else 1
    by_size = sorted(by_name, key=lambda package: (-package.size, package.name))
    alone = by_size[: slots - group_count]
    buckets: list[list[PackageFiles]] = [[] for _ in range(group_count)]
    for package in by_size[slots - group_count :]:
        buckets[_bucket(package.name, group_count)].append(package)
    groups = [(package,) for package in alone] + [
        tuple(sorted(bucket, key=lambda package: package.name)) for bucket in buckets if bucket
    ]
    return sorted(groups, key=lambda group: group[0].name)


def _bucket(name: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count
