"""Tables of the SQL ResourceStore: objects, the change log and the revision counter.

Every write bumps the single-row ``sedna_revision`` counter with ``UPDATE ... RETURNING`` as its
first statement. That row lock (PostgreSQL) or write lock (SQLite) serializes writers, so
revisions commit in order without gaps: a reader that has seen revision N has seen every change
up to N, which is what lets a watch poll the change log with ``revision > cursor``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["CHANGES", "COUNTER_ROW_ID", "METADATA", "OBJECTS", "REVISION"]

METADATA = MetaData()

COUNTER_ROW_ID = 1

OBJECTS = Table(
    "sedna_objects",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(253), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("name", String(253), nullable=False),
    Column("uid", String(36), nullable=False),
    Column("api_version", String(253), nullable=False),
    # The revision of the last write: the object's resourceVersion.
    Column("revision", BigInteger, nullable=False),
    Column("generation", BigInteger, nullable=False),
    # JSON text (canonical form): labels, annotations, finalizers, ownerReferences, timestamps.
    Column("metadata", Text, nullable=False),
    Column("spec", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("kind", "namespace", "name", name="uq_sedna_objects_key"),
)

CHANGES = Table(
    "sedna_changes",
    METADATA,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(16), nullable=False),
    Column("kind", String(253), nullable=False),
    Column("namespace", String(63), nullable=False),
    # The whole object after the change (for DELETED: its last state), JSON text.
    Column("object", Text, nullable=False),
    Index("ix_sedna_changes_kind_revision", "kind", "revision"),
)

REVISION = Table(
    "sedna_revision",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)
