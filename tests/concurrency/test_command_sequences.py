"""Property: for random sequences of commands against a real stack (hypothesis' stateful testing),
the API's answers equal a fold of the log computed here, independently of the projection's code.

Each example works in a namespace of its own; every build is waited for, so the log is complete
when the answers are compared."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings, strategies as strategy
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from envstore.common.events import (
    BuildCanceled,
    BuildCompleted,
    BuildDeleteRequested,
    BuildFailed,
    BuildSubmitted,
    EnvironmentCurrentBuildSet,
    EnvironmentDeleted,
    EnvironmentUpdated,
    Event,
)
from tests.api_client import ApiClient, environment_yaml
from envstore.launcher.stack import EmbeddedStack
from tests.stream_reader import stream_events

ENVIRONMENTS = ("alpha", "beta")
PACKAGES = ("tinyjson", "configlib", "units", "no-such-package")


@dataclass
class FoldedEnvironment:
    exists: bool = True
    current: int | None = None
    description: str | None = None


@dataclass
class Fold:
    environments: dict[str, FoldedEnvironment] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    environment_of: dict[int, str] = field(default_factory=dict)


def fold_log(events: list[tuple[int, Event]], namespace: str) -> Fold:
    """What the log says about ``namespace``, by the rules users are told (README, conda-store)."""
    fold = Fold()
    for _, event in events:
        if isinstance(event, BuildSubmitted) and event.namespace == namespace:
            environment = fold.environments.get(event.environment)
            if environment is None or not environment.exists:
                environment = fold.environments[event.environment] = FoldedEnvironment(description=event.description)
            elif event.description is not None:
                environment.description = event.description
            fold.statuses[event.build_id] = "QUEUED"
            fold.environment_of[event.build_id] = event.environment
            if environment.current is None:
                environment.current = event.build_id  # the first build is current at once
        elif isinstance(event, (BuildCompleted, BuildFailed, BuildCanceled)) and event.build_id in fold.statuses:
            if fold.statuses[event.build_id] in ("QUEUED", "BUILDING"):
                fold.statuses[event.build_id] = {
                    BuildCompleted: "COMPLETED", BuildFailed: "FAILED", BuildCanceled: "CANCELED"
                }[type(event)]
                if isinstance(event, BuildCompleted):
                    fold.environments[fold.environment_of[event.build_id]].current = event.build_id
        elif isinstance(event, EnvironmentCurrentBuildSet) and event.namespace == namespace:
            fold.environments[event.environment].current = event.build_id
        elif isinstance(event, EnvironmentUpdated) and event.namespace == namespace:
            fold.environments[event.environment].description = event.description
        elif isinstance(event, EnvironmentDeleted) and event.namespace == namespace:
            fold.environments[event.environment].exists = False
    return fold


class CommandSequences(RuleBasedStateMachine):
    """Commands as a user sends them; the model only remembers ids, the log decides the rest."""

    def __init__(self, api: ApiClient, stack: EmbeddedStack, loop: asyncio.AbstractEventLoop, namespace: str) -> None:
        super().__init__()
        self.api = api
        self.stack = stack
        self.loop = loop
        self.namespace = namespace
        self.builds: list[int] = []

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def request(self, method: str, path: str, **options):  # type: ignore[no-untyped-def]
        status, body = self.run(self.api.request(method, path, **options))
        assert status < 500, (method, path, status, body)
        return status, body

    @initialize(environment=strategy.sampled_from(ENVIRONMENTS))
    def first_build(self, environment: str) -> None:
        self.submit(environment, "tinyjson")

    @rule(environment=strategy.sampled_from(ENVIRONMENTS), package=strategy.sampled_from(PACKAGES))
    def submit(self, environment: str, package: str) -> None:
        status, body = self.request(
            "POST", "/api/v1/specification/",
            json={"namespace": self.namespace, "specification": environment_yaml(environment, [package])},
        )
        assert status == 200, body
        build_id = body["data"]["build_id"]
        self.builds.append(build_id)
        self.run(self.api.wait_for_build(build_id))

    @rule(environment=strategy.sampled_from(ENVIRONMENTS), pick=strategy.integers(min_value=0, max_value=20))
    def rollback(self, environment: str, pick: int) -> None:
        if self.builds:
            build_id = self.builds[pick % len(self.builds)]
            self.request("PUT", f"/api/v1/environment/{self.namespace}/{environment}/", json={"build_id": build_id})

    @rule(environment=strategy.sampled_from(ENVIRONMENTS), text=strategy.sampled_from(("one", "two", "")))
    def describe(self, environment: str, text: str) -> None:
        self.request("PUT", f"/api/v1/environment/{self.namespace}/{environment}/", json={"description": text})

    @rule(environment=strategy.sampled_from(ENVIRONMENTS))
    def delete_environment(self, environment: str) -> None:
        self.request("DELETE", f"/api/v1/environment/{self.namespace}/{environment}/")

    @rule(pick=strategy.integers(min_value=0, max_value=20))
    def delete_build(self, pick: int) -> None:
        if self.builds:
            self.request("DELETE", f"/api/v1/build/{self.builds[pick % len(self.builds)]}/")

    @invariant()
    def answers_equal_the_fold_of_the_log(self) -> None:
        fold = fold_log(self.run(stream_events(self.stack)), self.namespace)
        for name, environment in fold.environments.items():
            status, body = self.request("GET", f"/api/v1/environment/{self.namespace}/{name}/")
            if not environment.exists:
                assert status == 404, (name, body)
                continue
            assert status == 200, (name, body)
            assert body["data"]["current_build_id"] == environment.current, (name, body["data"], environment)
            assert body["data"]["description"] == environment.description, (name, body["data"], environment)
        status, body = self.request("GET", f"/api/v1/environment/?namespace={self.namespace}&size=100")
        assert sorted(row["name"] for row in body["data"]) == sorted(
            name for name, environment in fold.environments.items() if environment.exists
        )
        for build_id, expected in fold.statuses.items():
            status, body = self.request("GET", f"/api/v1/build/{build_id}/")
            assert status == 200 and body["data"]["status"] == expected, (build_id, expected, body)


async def test_api_answers_equal_an_independent_fold_of_the_log(api: ApiClient, stack) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    namespaces = (f"property-{index}" for index in itertools.count())

    def machine() -> CommandSequences:
        return CommandSequences(api, stack, loop, next(namespaces))

    run = settings(
        max_examples=4,
        stateful_step_count=6,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=run)
