"""The registry's read models, fed events in stream order as the follower feeds them: which build
each tag names, through completions, rollbacks, deletions and re-creations; the role mappings a
token gets; the settings a dynamic image is submitted under."""

from __future__ import annotations

import asyncio

from envstore.common.events import (
    ArtifactFailed,
    ArtifactReady,
    BlobRef,
    BuildCanceled,
    BuildCompleted,
    BuildDeleted,
    BuildDeleteRequested,
    BuildFailed,
    BuildSubmitted,
    EnvironmentCurrentBuildSet,
    EnvironmentDeleted,
    Event,
    NamespaceDeleted,
    NamespaceRoleMappingChanged,
    NamespaceUpdated,
    SettingsChanged,
)
from envstore.common.settings import EnvstoreSettings
from envstore.registry.role_mappings import RoleMappings
from envstore.registry.settings_overrides import SettingsOverrides
from envstore.registry.tag_index import LATEST, TagIndex

IMAGE = "application/vnd.oci.image.manifest.v1+json"


class Stream:
    """Events with consecutive sequences, applied to the read models as the follower does."""

    def __init__(self, *models) -> None:  # type: ignore[no-untyped-def]
        self.models = models
        self.sequence = 0

    def add(self, event: Event) -> int:
        self.sequence += 1
        for model in self.models:
            model.apply(event, self.sequence)
        return self.sequence

    def submit(self, namespace: str, environment: str, image: bool = True) -> int:
        return self.add(
            BuildSubmitted(
                namespace=namespace,
                environment=environment,
                specification={"name": environment},
                spec_sha256="ab" * 32,
                platforms=["linux-64"],
                artifacts=["LOCKFILE", "DOCKER_MANIFEST"] if image else ["LOCKFILE"],
                scheduled_on=1_700_000_000.0,
            )
        )

    def image_ready(self, build_id: int) -> str:
        digest = f"sha256:{build_id:064x}"
        self.add(
            ArtifactReady(
                build_id=build_id, kind="DOCKER_MANIFEST", key=f"docker/manifest/{build_id}",
                blob=BlobRef(digest=digest, size=100), content_type=IMAGE,
            )
        )
        return digest

    def complete(self, build_id: int, namespace: str, environment: str) -> str:
        digest = self.image_ready(build_id)
        self.add(BuildCompleted(build_id=build_id, namespace=namespace, environment=environment))
        return digest


def digest_of(index: TagIndex, namespace: str, environment: str, tag: str) -> str | None:
    repository = index.repository(namespace, environment)
    build = repository.build_for(tag) if repository else None
    return build.manifest.digest if build is not None and build.has_image else None


def test_latest_follows_first_build_completions_and_rollbacks() -> None:
    index = TagIndex()
    stream = Stream(index)
    first = stream.submit("team", "env")
    repository = index.repository("team", "env")
    assert repository is not None and repository.current_build_id == first  # current while queued
    first_digest = stream.complete(first, "team", "env")
    second = stream.submit("team", "env")
    assert digest_of(index, "team", "env", LATEST) == first_digest  # the new build is not current yet
    second_digest = stream.complete(second, "team", "env")
    assert digest_of(index, "team", "env", LATEST) == second_digest

    stream.add(EnvironmentCurrentBuildSet(namespace="team", environment="env", build_id=first))
    assert digest_of(index, "team", "env", LATEST) == first_digest
    key = repository.builds[second].build_key
    assert key == f"abababab-1700000000-{second}-env"
    assert digest_of(index, "team", "env", key) == digest_of(index, "team", "env", str(second)) == second_digest
    assert repository.tags() == sorted({str(first), str(second), key, repository.builds[first].build_key, LATEST})


def test_deleted_builds_environments_and_namespaces_lose_their_tags() -> None:
    index = TagIndex()
    stream = Stream(index)
    kept = stream.submit("team", "env")
    stream.complete(kept, "team", "env")
    doomed = stream.submit("team", "env")
    stream.complete(doomed, "team", "env")
    stream.add(BuildDeleteRequested(build_id=doomed, keep=["LOGS", "LOCKFILE", "YAML"]))
    assert digest_of(index, "team", "env", str(doomed)) is None
    assert digest_of(index, "team", "env", LATEST) is None  # the current build was deleted
    assert digest_of(index, "team", "env", str(kept)) is not None
    # A deletion that keeps the image keeps the tag.
    stream.add(BuildDeleted(build_id=kept, kept=["DOCKER_MANIFEST"]))
    assert digest_of(index, "team", "env", str(kept)) is not None

    stream.add(EnvironmentDeleted(namespace="team", environment="env"))
    assert index.repository("team", "env") is None and index.deletions("team", "env") == 1
    again = stream.submit("team", "env")  # created again: starts as a new environment
    assert index.repository("team", "env").build_for(LATEST).build_id == again  # type: ignore[union-attr]
    assert digest_of(index, "team", "env", str(kept)) is None

    other = stream.submit("team", "other")
    stream.complete(other, "team", "other")
    stream.add(NamespaceDeleted(namespace="team"))
    assert index.repositories() == [] and not index.namespace_exists("team")


def test_why_a_build_has_no_image_is_kept() -> None:
    index = TagIndex()
    stream = Stream(index)
    failed = stream.submit("team", "failed")
    stream.add(BuildFailed(build_id=failed, phase="solve", reason="cannot be solved: conflict"))
    canceled = stream.submit("team", "canceled")
    stream.add(BuildCanceled(build_id=canceled, reason="canceled from the REST API"))
    broken = stream.submit("team", "broken")
    stream.add(ArtifactFailed(build_id=broken, kind="DOCKER_MANIFEST", reason="base image missing"))
    plain = stream.submit("team", "plain", image=False)
    builds = {build_id: index.build(build_id) for build_id in (failed, canceled, broken, plain)}
    assert (builds[failed].status, builds[failed].failure) == ("FAILED", "cannot be solved: conflict")
    assert (builds[canceled].status, builds[canceled].failure) == ("CANCELED", "canceled from the REST API")
    assert builds[broken].image_failure == "base image missing" and not builds[broken].finished
    assert not builds[plain].wants_image


async def test_waiters_wake_when_the_state_they_wait_for_is_applied() -> None:
    index = TagIndex()
    stream = Stream(index)
    build = stream.submit("team", "env")
    waiting = asyncio.create_task(index.wait_until(lambda: index.build(build).has_image, 5))  # type: ignore[union-attr]
    await asyncio.sleep(0)
    assert not waiting.done()
    stream.image_ready(build)
    assert await waiting is True
    assert await index.wait_until(lambda: False, 0.01) is False


def test_role_mappings_as_the_api_grants_them() -> None:
    mappings = RoleMappings()
    stream = Stream(mappings)
    for namespace in ("alpha", "beta", "gamma"):
        stream.submit(namespace, "env")
    stream.add(NamespaceUpdated(namespace="alpha", role_mappings={"beta/ex*": ["viewer"], "gamma/*": ["admin"]}))
    stream.add(NamespaceRoleMappingChanged(namespace="beta", other_namespace="alpha", role="developer"))
    stream.add(NamespaceRoleMappingChanged(namespace="gamma", other_namespace="alpha", role="viewer"))
    assert mappings.bindings_for("alpha", 1) == {"beta/ex*": ["viewer"], "gamma/*": ["admin"]}
    assert mappings.bindings_for("alpha", 2) == {"beta/*": ["developer"], "gamma/*": ["viewer"]}
    stream.add(NamespaceRoleMappingChanged(namespace="gamma", other_namespace="alpha", role=None))
    assert mappings.bindings_for("alpha", 2) == {"beta/*": ["developer"]}
    stream.add(NamespaceDeleted(namespace="beta"))
    assert mappings.bindings_for("alpha", 2) == {}
    stream.add(NamespaceDeleted(namespace="alpha"))
    stream.submit("alpha", "env")  # created again: without its old v1 mappings
    assert mappings.bindings_for("alpha", 1) == {}


def test_dynamic_images_use_the_settings_stored_for_their_namespace() -> None:
    overrides = SettingsOverrides(EnvstoreSettings(conda_default_channels=["global-default"]))
    stream = Stream(overrides)
    stream.add(SettingsChanged(values={"conda_default_channels": ["everywhere"]}))
    stream.add(SettingsChanged(namespace="conda-store-dynamic", values={"conda_default_channels": ["dynamic-only"]}))
    stream.add(SettingsChanged(namespace="conda-store-dynamic", values={"conda_platforms": ["global-only-key"]}))
    assert overrides.effective("conda-store-dynamic", "x").conda_default_channels == ["dynamic-only"]
    assert overrides.effective("conda-store-dynamic", "x").conda_platforms != ["global-only-key"]
    assert overrides.effective("team", "x").conda_default_channels == ["everywhere"]
