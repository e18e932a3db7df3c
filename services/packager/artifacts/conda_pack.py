"""The CONDA_PACK artifact: a conda-pack tarball of the build's prefix.

Relocatable: unpack it anywhere, then run ``bin/conda-unpack`` (with the environment's python, or
any ``python3`` when the environment has none) and it rewrites the build-time prefix placeholders in
text and binary files to the directory it was unpacked into.
"""

from __future__ import annotations

from envstore.common.artifact_keys import artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.packager.artifacts.inputs import BuildInputs, Produced
from envstore.packager.artifacts.packed_environment import packed_environment


async def produce(inputs: BuildInputs) -> Produced:
    packed = await packed_environment(inputs)
    blob = await inputs.storage.adopt_file(packed.archive, packed.blob)
    return Produced(artifact_key(ArtifactKind.CONDA_PACK, inputs.build.build_key, inputs.further_platform), blob, "application/gzip")
