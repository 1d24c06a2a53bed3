"""``target_mode`` travels in the proto SessionConfig both ways."""

from __future__ import annotations

import pytest

from sedna.api.aggregator.v1 import aggregation_service_pb2 as pb
from sedna_aggregator.convert import config_from_proto, config_to_proto
from sedna_aggregator.core import SessionConfig, SessionConfigError, TargetMode


def test_target_mode_round_trips() -> None:
    config = SessionConfig(
        target_metric="loss", target_metric_value=0.1, target_mode=TargetMode.MIN
    )
    assert config_from_proto(config_to_proto(config)).target_mode is TargetMode.MIN


def test_unset_target_mode_takes_the_default() -> None:
    base = SessionConfig(target_mode=TargetMode.MIN)
    assert config_from_proto(pb.SessionConfig(), defaults=base).target_mode is TargetMode.MIN


def test_unknown_target_mode_names_the_field() -> None:
    with pytest.raises(
        SessionConfigError, match="target_mode must be one of 'max', 'min', got 'up'"
    ):
        config_from_proto(pb.SessionConfig(target_mode="up"))
