"""The chart turns GM leader election on with more than one replica, and wires it right.

The environment the Deployment gives the GM must load as valid :class:`GMSettings` (the same
names the service reads), with the pod name as identity, and the probes must keep a standby
alive (TCP liveness) but out of the Service (gRPC-health readiness: NOT_SERVING).
"""

from __future__ import annotations

from typing import Any

import pytest
from chart.helm_chart import NAMESPACE

from sedna_gm.settings import GMSettings

Render = Any


def gm_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    gm = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "sedna-gm"
    )
    container: dict[str, Any] = gm["spec"]["template"]["spec"]["containers"][0]
    return container


def election_env(container: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for e in container.get("env") or []
        if e["name"].startswith("SEDNA_GM_LEADER_ELECTION")
    }


@pytest.mark.parametrize(
    ("values", "on"),
    [
        ({}, False),
        ({"gm": {"replicas": 2}}, True),
        ({"gm": {"replicas": 1, "leaderElection": {"enabled": True}}}, True),
        ({"gm": {"replicas": 3, "leaderElection": {"enabled": False}}}, False),
    ],
)
def test_leader_election_follows_replicas_unless_set(
    render: Render, values: dict[str, Any], on: bool
) -> None:
    container = gm_container(render(values))
    env = election_env(container)
    assert bool(env) is on
    if not on:
        assert "grpc" in container["livenessProbe"]
        return
    assert env["SEDNA_GM_LEADER_ELECTION"] == "true"
    assert env["SEDNA_GM_LEADER_ELECTION_IDENTITY"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SEDNA_GM_LEADER_ELECTION_NAMESPACE"] == NAMESPACE
    assert env["SEDNA_GM_LEADER_ELECTION_LEASE_NAME"] == "sedna-gm"
    # A standby is alive (TCP) but not ready (gRPC health NOT_SERVING).
    assert set(container["livenessProbe"]) >= {"tcpSocket", "periodSeconds"}
    assert "grpc" not in container["livenessProbe"]
    assert "grpc" in container["readinessProbe"]


def test_environment_loads_as_gm_settings(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "gm": {
            "replicas": 2,
            "watchNamespace": "sedna-jobs",
            "leaderElection": {"leaseSeconds": 30, "renewDeadlineSeconds": 20, "retrySeconds": 4},
        }
    }
    env = election_env(gm_container(render(values)))
    for name, value in env.items():
        monkeypatch.setenv(name, value if isinstance(value, str) else "gm-7d9f-abcde")
    settings = GMSettings()
    assert settings.leader_election
    # The role is bound in the watched namespace only: the Lease lives there.
    assert settings.leader_election_namespace == "sedna-jobs"
    assert settings.leader_election_identity == "gm-7d9f-abcde"
    assert settings.leader_election_lease_seconds == 30
    assert settings.leader_election_renew_deadline_seconds == 20
    assert settings.leader_election_retry_seconds == 4


def test_schema_refuses_a_bad_enabled_value(render: Render) -> None:
    with pytest.raises(Exception, match="enabled"):
        render({"gm": {"leaderElection": {"enabled": "sometimes"}}})
