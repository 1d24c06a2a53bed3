"""Planning the embedded stack: node-name checks and stable ports across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedna.cli.stack import StackError, component_command, plan_stack


def test_plan_has_one_lc_per_node_and_is_reused(tmp_path: Path) -> None:
    first = plan_stack(tmp_path, ["cloud", "edge-1"], 0)
    assert [c.name for c in first.components] == ["gm", "lc-cloud", "lc-edge-1"]
    ports = {p for c in first.components for p in (c.port, c.metrics_port, c.http_port) if p}
    assert len(ports) == 8  # gm: 2, each lc: 3, all distinct
    again = plan_stack(tmp_path, ["cloud", "edge-1"], 0)
    assert [(c.port, c.http_port) for c in again.components] == [
        (c.port, c.http_port) for c in first.components
    ]


def test_adding_a_node_keeps_existing_ports(tmp_path: Path) -> None:
    first = plan_stack(tmp_path, ["edge-1"], 0)
    second = plan_stack(tmp_path, ["edge-1", "edge-2"], 0)
    assert second.components[1].port == first.components[1].port
    assert second.components[2].node == "edge-2"


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (["Edge_1"], "'Edge_1' is not a valid node name"),
        (["-edge"], "'-edge' is not a valid node name"),
        (["edge", "edge"], "repeated node name(s): edge"),
        ([], "give at least one node name"),
    ],
)
def test_bad_node_names_are_rejected(tmp_path: Path, nodes: list[str], message: str) -> None:
    with pytest.raises(StackError, match="--nodes") as info:
        plan_stack(tmp_path, nodes, 0)
    assert message in str(info.value)


def test_corrupt_plan_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text("{not json")
    plan = plan_stack(tmp_path, ["edge-1"], 0)
    assert plan.components[1].node == "edge-1"


def test_commands_point_lcs_at_the_gm(tmp_path: Path) -> None:
    plan = plan_stack(tmp_path, ["edge-1"], 0)
    gm_cmd = component_command(plan, plan.gm)
    lc_cmd = component_command(plan, plan.components[1])
    assert gm_cmd[0].endswith("sedna-gm")
    assert "--store-url" in gm_cmd
    assert gm_cmd[gm_cmd.index("--store-url") + 1].startswith("sqlite:///")
    assert lc_cmd[lc_cmd.index("--gm-address") + 1] == plan.gm.address
    assert lc_cmd[lc_cmd.index("--node-name") + 1] == "edge-1"


@pytest.mark.parametrize(("busy", "hint"), [("gm", "choose another --port"), ("lc", "stack.json")])
def test_busy_port_is_a_clear_error_before_anything_starts(
    tmp_path: Path, busy: str, hint: str
) -> None:
    import socket

    from sedna.cli.stack import Stack

    plan = plan_stack(tmp_path, ["edge-1"], 0)
    component = plan.components[0 if busy == "gm" else 1]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", component.port))
        holder.listen()
        stack = Stack(plan, start_timeout=5)
        with pytest.raises(StackError, match="is in use") as info:
            stack.start()
    assert hint in str(info.value)
    assert not any(r.process.poll() is None for r in stack.running.values())


def test_a_killed_component_is_restarted_on_its_ports(tmp_path: Path) -> None:
    import time

    from sedna.cli.stack import Stack, wait_healthy

    plan = plan_stack(tmp_path, ["edge-1"], 0)
    stack = Stack(plan, start_timeout=60)
    restarted: list[tuple[str, int]] = []
    try:
        stack.start()
        lc = stack.running["lc-edge-1"]
        lc.process.kill()
        lc.process.wait(timeout=30)
        stack.check_and_restart(lambda child, code: restarted.append((child.plan.name, code)))
        assert restarted == [("lc-edge-1", -9)]
        replacement = stack.running["lc-edge-1"]
        assert replacement.restarts == 1
        assert replacement.process.pid != lc.process.pid
        wait_healthy(replacement.plan.address, time.monotonic() + 60)
    finally:
        stack.stop(grace=30)
    assert all(r.process.poll() is not None for r in stack.running.values())


def test_local_controllers_start_together_once_the_gm_is_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from sedna.cli import stack as stack_module

    plan = plan_stack(tmp_path, ["cloud", "edge-1", "edge-2"], 0)
    stack = stack_module.Stack(plan, start_timeout=5)
    running_at_wait: list[tuple[str, list[str]]] = []
    ready: list[str] = []

    def spawn(component: stack_module.ComponentPlan) -> stack_module.RunningComponent:
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        log = (tmp_path / f"{component.name}.log").open("ab")
        return stack_module.RunningComponent(component, process, tmp_path / "x.log", log)

    def wait(address: str, deadline: float, alive: object = None) -> None:
        name = next(c.name for c in plan.components if c.address == address)
        running_at_wait.append((name, list(stack.running)))

    monkeypatch.setattr(stack, "_spawn", spawn)
    monkeypatch.setattr(stack_module, "wait_healthy", wait)
    stack.start(on_ready=lambda component: ready.append(component.name))
    everything = ["gm", "lc-cloud", "lc-edge-1", "lc-edge-2"]
    assert running_at_wait == [
        ("gm", ["gm"]),  # the GM alone first: the LCs connect to it
        ("lc-cloud", everything),  # then every LC started before any is waited for
        ("lc-edge-1", everything),
        ("lc-edge-2", everything),
    ]
    assert ready == everything
    for running in stack.running.values():
        running.log_file.close()
