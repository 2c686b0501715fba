"""Built-in middleware: TodoList, FileSystem, HumanInTheLoop, AskUserQuestion, Summarization,
PatchToolCalls, ConversationTitle, DebugLog, MCPTools (and the ``Middleware`` base), and
``default_middleware``: the standard stack in one call. ``MCPTools`` imports ``mcp`` only when
one is built, so this namespace never needs it."""

from sagents._public import publish as _publish
from sagents.execution._middleware import Middleware
from sagents.middleware._ask_user import AskUserQuestion
from sagents.middleware._conversation_title import ConversationTitle, TitleReady
from sagents.middleware._debug_log import DebugLog
from sagents.middleware._default_stack import DEFAULT_STACK, default_middleware
from sagents.middleware._disk_file_store import DiskFileStore
from sagents.middleware._file_store import (
    ConversationFiles,
    FileInfo,
    FileStore,
    MemoryFileStore,
    Mount,
    MountedFileStore,
    normalize_path,
)
from sagents.middleware._file_system import FileSystem
from sagents.middleware._human_in_the_loop import HumanInTheLoop
from sagents.middleware._mcp import MCPTools
from sagents.middleware._patch_tool_calls import PatchToolCalls
from sagents.middleware._sub_agent import GENERAL_PURPOSE, SubAgent, SubAgentSpec
from sagents.middleware._summarization import Summarization, is_context_overflow, is_summary
from sagents.middleware._todo_list import TodoList
from sagents.middleware._token_counter import TokenCounter, approximate_token_count

__all__ = [
    "AskUserQuestion",
    "ConversationFiles",
    "ConversationTitle",
    "DEFAULT_STACK",
    "DebugLog",
    "DiskFileStore",
    "FileInfo",
    "FileStore",
    "FileSystem",
    "GENERAL_PURPOSE",
    "HumanInTheLoop",
    "MCPTools",
    "MemoryFileStore",
    "Middleware",
    "Mount",
    "MountedFileStore",
    "PatchToolCalls",
    "SubAgent",
    "SubAgentSpec",
    "Summarization",
    "TitleReady",
    "TodoList",
    "TokenCounter",
    "approximate_token_count",
    "default_middleware",
    "is_context_overflow",
    "is_summary",
    "normalize_path",
]

_publish(globals(), __all__, __name__)
