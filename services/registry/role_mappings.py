"""Namespace role mappings, kept from the stream, so that a token's effective bindings in the
registry are the API's: defaults ← the token's own ← role mappings (``Principal``'s merge).

- v1 (``namespace.updated`` with ``role_mappings``): rows attached to a namespace; a caller whose
  primary namespace is that namespace is granted ``role`` on each row's ARN.
- v2 (``namespace.role_mapping_changed``): namespace N grants ``role`` to other namespace O; a
  caller whose primary namespace is O is granted ``role`` on ``N/*``.
Deleted namespaces grant nothing; a namespace created again starts without v1 mappings.
"""

from __future__ import annotations

from envstore.common.events import (
    BuildSubmitted,
    Event,
    NamespaceCreated,
    NamespaceDeleted,
    NamespaceRoleMappingChanged,
    NamespaceUpdated,
)


class RoleMappings:
    def __init__(self) -> None:
        self._live: set[str] = set()
        self._deleted: set[str] = set()
        self._v1: dict[str, dict[str, list[str]]] = {}  # namespace → ARN → roles
        self._v2: dict[str, dict[str, str]] = {}  # granting namespace → other namespace → role

    def bindings_for(self, primary_namespace: str, version: int) -> dict[str, list[str]]:
        if version == 2:
            return {
                f"{namespace}/*": [grants[primary_namespace]]
                for namespace, grants in self._v2.items()
                if namespace in self._live and primary_namespace in grants
            }
        if primary_namespace not in self._live:
            return {}
        return {arn: list(roles) for arn, roles in self._v1.get(primary_namespace, {}).items()}

    def apply(self, event: Event | None, sequence: int) -> None:
        if isinstance(event, (NamespaceCreated, BuildSubmitted)):
            self._ensure(event.namespace)
        elif isinstance(event, NamespaceDeleted):
            self._live.discard(event.namespace)
            self._deleted.add(event.namespace)
        elif isinstance(event, NamespaceUpdated) and event.namespace in self._live:
            if event.role_mappings is not None:
                self._v1[event.namespace] = {arn: list(roles) for arn, roles in event.role_mappings.items()}
        elif isinstance(event, NamespaceRoleMappingChanged) and event.namespace in self._live:
            grants = self._v2.setdefault(event.namespace, {})
            if event.other_namespace is None:
                grants.clear()
            elif event.other_namespace in self._live:
                if event.role is None:
                    grants.pop(event.other_namespace, None)
                else:
                    grants[event.other_namespace] = event.role

    def _ensure(self, namespace: str) -> None:
        if namespace in self._deleted:
            self._deleted.discard(namespace)
            self._v1.pop(namespace, None)
        self._live.add(namespace)
