"""Persistence: the protocols adapters implement, an in-memory implementation, and
:func:`scope_key`, the stable text of a tenant scope that stores keep.

The SQL implementation (SQLAlchemy 2, SQLite by default, PostgreSQL) lives in
:mod:`sagents.persistence.sql` so that ``import sagents`` never imports SQLAlchemy.
"""

from sagents._public import publish as _publish
from sagents.persistence._files import (
    FileIndexPersistence,
    FilePersistence,
    PersistedFileStore,
)
from sagents.persistence._memory import MemoryPersistence
from sagents.persistence._protocols import (
    AgentPersistence,
    Conversation,
    ConversationLeases,
    ConversationStore,
    DisplayMessage,
    DisplayMessagePersistence,
    DisplayReconciliation,
    Lease,
    Scope,
    StateSnapshot,
    StoredState,
    ToolCallStatus,
)
from sagents.persistence._scope import scope_key

__all__ = [
    "AgentPersistence",
    "Conversation",
    "ConversationLeases",
    "ConversationStore",
    "DisplayMessage",
    "DisplayMessagePersistence",
    "DisplayReconciliation",
    "FileIndexPersistence",
    "FilePersistence",
    "Lease",
    "MemoryPersistence",
    "PersistedFileStore",
    "Scope",
    "StateSnapshot",
    "StoredState",
    "ToolCallStatus",
    "scope_key",
]

_publish(globals(), __all__, __name__)
