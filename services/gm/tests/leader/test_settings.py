"""Leader-election settings: client-go's defaults, and inconsistent durations refused by name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sedna_gm.settings import GMSettings


def test_defaults_are_client_go_s() -> None:
    s = GMSettings()
    assert not s.leader_election
    assert s.leader_election_lease_name == "sedna-gm"
    assert (
        s.leader_election_lease_seconds,
        s.leader_election_renew_deadline_seconds,
        s.leader_election_retry_seconds,
    ) == (15.0, 10.0, 2.0)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"leader_election_retry_seconds": 10.0}, "leader_election_renew_deadline_seconds"),
        ({"leader_election_lease_seconds": 10.0}, "leader_election_lease_seconds"),
        ({"leader_election_retry_seconds": 0}, "leader_election_retry_seconds"),
    ],
)
def test_inconsistent_durations_are_named(values: dict[str, float], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        GMSettings(**values)  # type: ignore[arg-type]
