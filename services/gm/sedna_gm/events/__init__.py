"""Persistent events: :class:`SqlEventRecorder` keeps controller events in the SQL database.

The embedded mode (SQLite or PostgreSQL store) uses it so that ``sedna describe`` shows events
across GM restarts; the Kubernetes mode keeps :class:`~sedna_gm.controllers.MemoryEventRecorder`.
"""

from sedna_gm.events.sql import EVENTS_TABLE, SqlEventRecorder

__all__ = ["EVENTS_TABLE", "SqlEventRecorder"]
