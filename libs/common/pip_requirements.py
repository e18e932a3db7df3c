"""The ``pip:`` section of an environment.yaml: requirements, and the option lines that say where
they come from (``--index-url``, ``--extra-index-url``, ``--find-links``, ``--no-index``,
``--trusted-host``), as pip reads them from a requirements file (``--option value`` or
``--option=value``). The API checks them at submission, the solver resolves with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Option → whether it takes a value.
PIP_OPTIONS: dict[str, bool] = {
    "--index-url": True,
    "-i": True,
    "--extra-index-url": True,
    "--find-links": True,
    "-f": True,
    "--trusted-host": True,
    "--no-index": False,
}
OPTION_NAMES = {"-i": "--index-url", "-f": "--find-links"}


class PipOptionError(ValueError):
    """A pip option line that cannot be used; the message says how to write it."""


def is_option_line(line: str) -> bool:
    return line.strip().startswith("-")


@dataclass(frozen=True)
class PipRequirements:
    requirements: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    trusted_hosts: tuple[str, ...] = ()

    @property
    def source_urls(self) -> list[str]:
        """Every index and link location the resolution reads (a local path as a file:// URL),
        for the checks on what the server may fetch. The default index (PyPI) is not listed."""
        urls = [*([self.index_url] if self.index_url else []), *self.extra_index_urls]
        urls += [location if "://" in location else Path(location).absolute().as_uri() for location in self.find_links]
        return urls

    def uv_arguments(self) -> list[str]:
        arguments: list[str] = []
        if self.index_url:
            arguments += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            arguments += ["--extra-index-url", url]
        for location in self.find_links:
            arguments += ["--find-links", location]
        if self.no_index:
            arguments.append("--no-index")
        for host in self.trusted_hosts:
            arguments += ["--allow-insecure-host", host]
        return arguments

    def option_lines(self) -> list[str]:
        """The options as pip section lines again (for the pinned environment.yaml)."""
        lines = [f"--index-url {self.index_url}"] if self.index_url else []
        lines += [f"--extra-index-url {url}" for url in self.extra_index_urls]
        lines += [f"--find-links {location}" for location in self.find_links]
        lines += ["--no-index"] if self.no_index else []
        lines += [f"--trusted-host {host}" for host in self.trusted_hosts]
        return lines


def parse_pip_section(lines: list[str]) -> PipRequirements:
    requirements: list[str] = []
    values: dict[str, list[str]] = {name: [] for name in PIP_OPTIONS}
    no_index = False
    for line in lines:
        text = line.strip()
        if not is_option_line(text):
            requirements.append(text)
            continue
        name, value = _split_option(text)
        if name == "--no-index":
            no_index = True
        else:
            values[OPTION_NAMES.get(name, name)].append(value)
    if len(values["--index-url"]) > 1:
        raise PipOptionError(f"pip option --index-url is given {len(values['--index-url'])} times; give it once")
    return PipRequirements(
        requirements=tuple(requirements),
        index_url=values["--index-url"][0] if values["--index-url"] else None,
        extra_index_urls=tuple(values["--extra-index-url"]),
        find_links=tuple(values["--find-links"]),
        no_index=no_index,
        trusted_hosts=tuple(values["--trusted-host"]),
    )


def _split_option(text: str) -> tuple[str, str]:
    """``--option value`` or ``--option=value`` → (option, value)."""
    head = text.split(None, 1)[0]
    if head.startswith("--") and "=" in head:
        name, _, value = text.partition("=")
    else:
        name, _, value = text.partition(" ")
    name, value = name.strip(), value.strip()
    if name not in PIP_OPTIONS:
        known = ", ".join(sorted(option for option in PIP_OPTIONS if option.startswith("--")))
        raise PipOptionError(f"pip option {name!r} is not supported; supported options: {known}")
    takes_value = PIP_OPTIONS[name]
    if takes_value and (not value or " " in value):
        raise PipOptionError(f"pip option {name} needs one value, e.g. '{name} https://example.org/simple'")
    if not takes_value and value:
        raise PipOptionError(f"pip option {name} takes no value")
    return name, value
