"""The guard: a post-generation safety filter (library, streaming checks, OpenAI-compatible proxy, audit log)."""

from seawall.guard.config import CategoryRule, Policy, ServerConfig, StreamPolicy
from seawall.guard.guard import Guard, Verdict
from seawall.guard.stream import StreamGuard, guard_stream

__all__ = [
    "CategoryRule",
    "Guard",
    "Policy",
    "ServerConfig",
    "StreamGuard",
    "StreamPolicy",
    "Verdict",
    "guard_stream",
]
