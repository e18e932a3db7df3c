"""Optimistic concurrency: commands on one environment are checked against the state they were
decided on, and published expecting the environment's position in the log. Twenty conflicting
commands at once — rollbacks to different builds, description updates, a new build, a build's
deletion, the environment's deletion — end in a state that a sequential order of the accepted ones
gives, each loser got a 409 or an answer decided against fresh state, and a replay agrees."""

from __future__ import annotations

import asyncio
import collections
import random
import time

from envstore.common.events import (
    BuildCompleted,
    BuildDeleted,
    BuildDeleteRequested,
    BuildSubmitted,
    EnvironmentCurrentBuildSet,
    EnvironmentDeleted,
    EnvironmentUpdated,
    Event,
)
from tests.api_client import ApiClient, environment_yaml
from tests.replay import rebuild_read_model
from tests.stream_reader import stream_events

NAMESPACE = "concurrency"
ENVIRONMENT = "contested"


def sequential_fold(events: list[tuple[int, Event]]) -> dict:
    """The environment's state from its events in stream order, checking that every command was
    valid where it stands (a sequential order of the accepted commands)."""
    state = {"exists": False, "current": None, "description": None, "completed": set(), "deleted_builds": set(), "builds": set()}
    for sequence, event in events:
        mine = getattr(event, "namespace", None) == NAMESPACE and getattr(event, "environment", None) == ENVIRONMENT
        if isinstance(event, BuildSubmitted) and mine:
            if not state["exists"]:
                state.update(exists=True, current=None, description=None)
            state["builds"].add(event.build_id)
            if state["current"] is None:
                state["current"] = event.build_id
        elif isinstance(event, BuildCompleted) and event.build_id in state["builds"]:
            state["completed"].add(event.build_id)
            if state["exists"]:
                state["current"] = event.build_id
        elif isinstance(event, EnvironmentCurrentBuildSet) and mine:
            assert state["exists"], f"rollback at {sequence} after the environment was deleted"
            assert event.build_id in state["completed"], f"rollback at {sequence} to a build not completed"
            assert event.build_id not in state["deleted_builds"], f"rollback at {sequence} to a deleted build"
            state["current"] = event.build_id
        elif isinstance(event, EnvironmentUpdated) and mine:
            assert state["exists"], f"description at {sequence} after the environment was deleted"
            state["description"] = event.description
        elif isinstance(event, BuildDeleteRequested) and event.build_id in state["builds"]:
            state["deleted_builds"].add(event.build_id)
        elif isinstance(event, EnvironmentDeleted) and mine:
            assert state["exists"], f"second deletion at {sequence}"
            assert state["builds"] <= {doomed.build_id for doomed in event.builds}, (
                f"the deletion at {sequence} missed builds submitted before it"
            )
            state["exists"] = False
    return state


async def deletions_carried_out(api: ApiClient, stack, timeout_seconds: float = 60) -> list[tuple[int, Event]]:  # type: ignore[no-untyped-def]
    """The log once the builder has carried out every accepted deletion (its ``build.deleted``
    events remove the builds' artifacts from their answers) and the read model holds it all."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        events = await stream_events(stack)
        asked = {(event.build_id, tuple(sorted(event.keep))) for _, event in events if isinstance(event, BuildDeleteRequested)}
        asked |= {(doomed.build_id, ()) for _, event in events if isinstance(event, EnvironmentDeleted) for doomed in event.builds}
        done = {(event.build_id, tuple(sorted(event.kept))) for _, event in events if isinstance(event, BuildDeleted)}
        if asked <= done:
            break
        assert time.monotonic() < deadline, f"deletions never carried out: {sorted(asked - done)}"
        await asyncio.sleep(0.1)
    last = events[-1][0]
    await api.wait_until("/api/v1/projection/", lambda body: body["data"]["checkpoint"] >= last)
    return events


async def test_twenty_conflicting_commands_end_in_a_sequential_order(api: ApiClient, stack) -> None:  # type: ignore[no-untyped-def]
    builds = []
    for dependency in ("tinyjson", "configlib", "units"):
        build = await api.wait_for_build(await api.submit(environment_yaml(ENVIRONMENT, [dependency]), namespace=NAMESPACE))
        assert build["status"] == "COMPLETED", build["status_info"]
        builds.append(build["id"])

    commands = (
        [("PUT", f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/", {"build_id": builds[index % 3]}) for index in range(12)]
        + [("PUT", f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/", {"description": f"take {index}"}) for index in range(4)]
        + [("POST", "/api/v1/specification/", {"namespace": NAMESPACE, "specification": environment_yaml(ENVIRONMENT, ["textutils"])})]
        + [("DELETE", f"/api/v1/build/{builds[0]}/", None)]
    )
    random.Random(13).shuffle(commands)
    # The environment's deletions are sent among the last, so that most commands race each other first.
    deletion = ("DELETE", f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/", None)
    commands[14:14] = [deletion]
    commands.append(deletion)
    answers = await asyncio.gather(
        *(api.request(method, path, **({"json": body} if body is not None else {})) for method, path, body in commands)
    )
    statuses = collections.Counter(status for status, _ in answers)
    print("outcomes:", dict(statuses))
    # Accepted (200), refused after a decision on fresh state (400/404: e.g. the environment was
    # deleted meanwhile), or a conflict that stayed after retries (409) — never an error.
    assert set(statuses) <= {200, 400, 404, 409}, answers
    deletions = [answer for (method, path, _), answer in zip(commands, answers) if method == "DELETE" and "/environment/" in path]
    # At most one deletion wins, unless the new build made the environment again between them (under
    # this much contention both may also run out of attempts: 409, nothing changed).
    assert sum(status == 200 for status, _ in deletions) <= 2
    assert statuses[200] >= 1

    # Let the new build end (its completion moves the current build), then fold the log independently.
    for (method, path, _), (status, body) in zip(commands, answers):
        if method == "POST" and status == 200:
            await api.wait_for_build(body["data"]["build_id"])
    # The builder carries deletions out after the commands: their events change the builds'
    # answers, so the comparison with a replay below waits for them.
    events = await deletions_carried_out(api, stack)
    state = sequential_fold(events)
    accepted_rollbacks = sum(
        1 for (method, path, body), (status, _) in zip(commands, answers)
        if status == 200 and body is not None and "build_id" in body
    )
    recorded_rollbacks = sum(
        1 for _, event in events
        if isinstance(event, EnvironmentCurrentBuildSet) and event.environment == ENVIRONMENT and event.build_id in builds
    )
    assert recorded_rollbacks == accepted_rollbacks, "every accepted rollback is one event, every loser none"

    status, body = await api.get(f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/")
    if state["exists"]:
        assert status == 200
        assert body["data"]["current_build_id"] == state["current"]
        assert body["data"]["description"] == state["description"]
    else:
        assert status == 404

    before = await api.get(f"/api/v1/environment/?namespace={NAMESPACE}&size=100")
    build_answers = [await api.get(f"/api/v1/build/{build_id}/") for build_id in builds]
    await rebuild_read_model(stack)
    assert await api.get(f"/api/v1/environment/?namespace={NAMESPACE}&size=100") == before
    assert [await api.get(f"/api/v1/build/{build_id}/") for build_id in builds] == build_answers
