"""The LocalController's local durable state: link position, held resources, report outbox."""

from sedna_lc.state.db import LinkPosition, LocalState, StoredResource
from sedna_lc.state.outbox import Outbox

__all__ = ["LinkPosition", "LocalState", "Outbox", "StoredResource"]
