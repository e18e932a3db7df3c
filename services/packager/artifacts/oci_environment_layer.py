"""The image's last, small layer: what makes the packages one environment.

- ``conda-meta/``: the package records (so ``conda list -p /opt/conda`` works in the image), with
  the packager's own paths (package cache, staging directory) removed so that they neither leak
  nor make the layer differ between machines;
- ``conda-meta/state``: the specification's ``variables``, where conda keeps an environment's
  variables (``conda activate`` sets them);
- ``etc/envstore/activate.sh``: for shells, sets what the image configuration sets and runs the
  packages' ``etc/conda/activate.d`` scripts (``. /opt/conda/etc/envstore/activate.sh``).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from envstore.packager.artifacts.oci_layers import EntryKind, LayerEntry
from envstore.packager.artifacts.oci_prefix import CONDA_META, StagedEnvironment

# Fields of a conda-meta record that name places on the machine that linked the package.
MACHINE_LOCAL_FIELDS = ("extracted_package_dir", "package_tarball_full_path", "link")
ACTIVATION_SCRIPT = "etc/envstore/activate.sh"
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def environment_variables(specification: dict[str, Any]) -> dict[str, str]:
    """The specification's ``variables``, checked to be usable as environment variables."""
    variables = {str(name): str(value) for name, value in (specification.get("variables") or {}).items()}
    invalid = [name for name in variables if not VARIABLE_NAME.match(name)]
    if invalid:
        raise ValueError(
            f"variables {invalid} cannot be environment variables in an image: "
            "names are letters, digits and '_', not starting with a digit"
        )
    return dict(sorted(variables.items()))


def environment_entries(
    staged: StagedEnvironment, environment_name: str, variables: dict[str, str]
) -> list[LayerEntry]:
    """Blocking (reads the staged conda-meta records): call it in a thread."""
    entries = []
    for relative in staged.unowned:
        source = staged.root / relative
        if relative.startswith(f"{CONDA_META}/") and relative.endswith(".json"):
            content = _portable_record(source.read_bytes())
        else:
            content = source.read_bytes()
        entries.append(LayerEntry(staged.path_in_image(relative), EntryKind.FILE, content=content))
    if variables:
        state = json.dumps({"env_vars": variables}, indent=2, sort_keys=True) + "\n"
        entries.append(
            LayerEntry(staged.path_in_image(f"{CONDA_META}/state"), EntryKind.FILE, content=state.encode())
        )
    script = activation_script(staged.image_prefix, environment_name, variables)
    entries.append(LayerEntry(staged.path_in_image(ACTIVATION_SCRIPT), EntryKind.FILE, content=script.encode()))
    return entries


def _portable_record(data: bytes) -> bytes:
    record = json.loads(data)
    for field in MACHINE_LOCAL_FIELDS:
        record.pop(field, None)
    return (json.dumps(record, indent=2) + "\n").encode()


def activation_script(prefix: str, environment_name: str, variables: dict[str, str]) -> str:
    quoted_bin = shlex.quote(f"{prefix}/bin")
    lines = [
        f"# Activates the conda environment {environment_name} of this image in a POSIX shell:",
        f"#     . {prefix}/{ACTIVATION_SCRIPT}",
        "# (The image's configuration already sets PATH, CONDA_PREFIX and the variables below;",
        "# this also runs the packages' activation scripts.)",
        f"export CONDA_PREFIX={shlex.quote(prefix)}",
        f"export CONDA_DEFAULT_ENV={shlex.quote(environment_name)}",
        f'case ":$PATH:" in *:{quoted_bin}:*) ;; *) export PATH={quoted_bin}:"$PATH" ;; esac',
        *(f"export {name}={shlex.quote(value)}" for name, value in variables.items()),
        f"for _envstore_script in {shlex.quote(prefix)}/etc/conda/activate.d/*.sh; do",
        '    [ -r "$_envstore_script" ] && . "$_envstore_script"',
        "done",
        "unset _envstore_script",
    ]
    return "\n".join(lines) + "\n"
