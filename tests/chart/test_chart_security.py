"""Every pod template of every render runs restricted: non-root, read-only root filesystem,
no privilege escalation, every capability dropped, the RuntimeDefault seccomp profile.

The one exception is the LC's optional init container that hands the hostPath state directory
to the LC's user: it runs as root with CAP_CHOWN alone, and nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest
from chart.helm_chart import VALUES_FILES, pod_specs, source

# (component, init container) allowed to run as root, with exactly these added capabilities.
ROOT_INIT = {("lc", "state-permissions"): ["CHOWN"]}


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


@pytest.mark.parametrize("values_name", list(VALUES_FILES))
def test_every_container_is_restricted(
    rendered_sets: dict[str, list[dict[str, Any]]], values_name: str
) -> None:
    seen = 0
    for obj, spec in pod_specs(rendered_sets[values_name]):
        pod = spec.get("securityContext") or {}
        assert pod.get("runAsNonRoot") is True, source(obj)
        assert (pod.get("runAsUser") or 0) != 0, source(obj)
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, source(obj)
        containers = [(c, False) for c in spec["containers"]]
        containers += [(c, True) for c in spec.get("initContainers") or []]
        for container, is_init in containers:
            seen += 1
            where = f"{source(obj)} container {container['name']}"
            ctx = container.get("securityContext") or {}
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("privileged") in (None, False), where
            caps = ctx.get("capabilities") or {}
            assert caps.get("drop") == ["ALL"], where
            exception = ROOT_INIT.get((_component(obj), container["name"]))
            if is_init and exception is not None:
                assert caps.get("add") == exception, where
                assert ctx.get("runAsUser") == 0, where
                continue
            assert not caps.get("add"), where
            assert ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert (ctx.get("runAsUser", pod.get("runAsUser")) or 0) != 0, where
            # The root filesystem is read-only: every place the service writes is a volume.
            assert {"/tmp"} <= {m["mountPath"] for m in container.get("volumeMounts") or []}, where
    assert seen >= 3


def test_only_the_gm_gets_an_api_token(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    for values_name in VALUES_FILES:
        for obj, spec in pod_specs(rendered_sets[values_name]):
            mounted = spec.get("automountServiceAccountToken")
            if _component(obj) == "gm":
                assert mounted is True, source(obj)
                assert spec["serviceAccountName"], source(obj)
            else:
                assert mounted is False, source(obj)


def test_the_permissions_init_container_can_be_turned_off(render: Any) -> None:
    objects = render({"lc": {"state": {"fixPermissions": False}}})
    for obj, spec in pod_specs(objects):
        assert not spec.get("initContainers"), source(obj)
