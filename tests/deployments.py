"""The ways a stack is deployed that the API conformance and CLI suites run against, with the same
tests each time (``pytest.mark.every_deployment``; other tests get ``root`` only):

* ``root`` — served at ``/``, reached directly;
* ``prefix`` — served under ``/conda-store`` (conda-store's own deployments' prefix), reached directly;
* ``proxy`` — under ``/conda-store`` behind nginx terminating TLS, with nginx's address as the
  only trusted proxy, reached only through nginx.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from envstore.launcher.stack import EmbeddedStack
from tests.reverse_proxy import PROXY_HOST, ProxiedStack

DEPLOYMENTS = ("root", "prefix", "proxy")
URL_PREFIX = "/conda-store"


@dataclass(frozen=True)
class Deployment:
    name: str

    def settings(self) -> dict[str, str]:
        if self.name == "root":
            return {}
        settings = {"ENVSTORE_URL_PREFIX": URL_PREFIX}
        if self.name == "proxy":
            settings["ENVSTORE_TRUSTED_PROXIES"] = PROXY_HOST
        return settings

    def stack(self, directory: Path, settings: dict[str, str]) -> EmbeddedStack:
        """A stack deployed this way (not started: ``async with`` it)."""
        deployed = {**settings, **self.settings()}
        if self.name == "proxy":
            return ProxiedStack(directory, settings=deployed)
        return EmbeddedStack(directory, settings=deployed)

    def registry_url(self, stack: EmbeddedStack) -> str:
        """Where docker clients reach the registry of ``stack``."""
        return stack.public_registry_url if isinstance(stack, ProxiedStack) else stack.registry_url

    def client_environment(self, stack: EmbeddedStack) -> dict[str, str]:
        """What a client program needs in its environment to reach ``stack``: trust in the
        proxy's certificate."""
        if isinstance(stack, ProxiedStack):
            return {"SSL_CERT_FILE": str(stack.proxy.certificate)}
        return {}
