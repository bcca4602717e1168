"""One exception tree for the whole suite.

Caller mistakes and runtime failures are different branches, so code can catch "the request
was wrong" apart from "the system failed"::

    MemosError
    ├── RequestError                 the caller asked for something invalid (HTTP 4xx)
    │   ├── InvalidInputError        empty messages, bad role, bad type, bad argument mix
    │   ├── FilterError              a malformed filter (DSL of DESIGN §5)
    │   ├── PayloadTooLargeError     too many messages, too long a text, too large a top_k
    │   ├── NotFoundError            an id that does not exist
    │   │   ├── MemoryNotFoundError
    │   │   ├── TaskNotFoundError
    │   │   ├── CubeNotFoundError
    │   │   └── KnowledgeBaseNotFoundError
    │   └── PermissionDeniedError    the caller may not touch that cube
    ├── NotSupportedError            the operation needs a component that is not configured
    ├── MissingDependencyError       an optional extra is not installed (names the extra)
    └── RuntimeFailure               the system failed; retrying may help (HTTP 5xx)
        ├── StoreError               the store failed (translated from the backend's error)
        │   ├── StoreBusyError       the store stayed locked past the busy timeout
        │   └── ConflictError        a concurrent writer changed the item first
        │       └── LeaseLostError   a task's lease passed to another worker
        ├── EmbeddingError           the embedding model failed
        ├── LLMError                 the LLM could not be reached or failed
        │   └── LLMOutputError       its answers stayed unusable (bad JSON) after retries
        └── TaskFailedError          a background task failed after its retries

Errors from a backend are translated at the boundary and raised ``from`` the original.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "CubeNotFoundError",
    "EmbeddingError",
    "FilterError",
    "InvalidInputError",
    "KnowledgeBaseNotFoundError",
    "LLMError",
    "LLMOutputError",
    "LeaseLostError",
    "MemoryNotFoundError",
    "MemosError",
    "MissingDependencyError",
    "NotFoundError",
    "NotSupportedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RequestError",
    "RuntimeFailure",
    "StoreBusyError",
    "StoreError",
    "TaskFailedError",
    "TaskNotFoundError",
]


class MemosError(Exception):
    """Base of every error this suite raises on purpose."""

    #: HTTP-like status code, used by the envelope and (later) the server.
    code: int = 500


class RequestError(MemosError):
    """The caller asked for something invalid; the same call will fail again."""

    code = 400


class InvalidInputError(RequestError):
    """An argument is invalid: empty messages, an unknown role, a wrong type."""


class FilterError(RequestError):
    """A filter does not follow the DSL. ``path`` points at the offending part."""

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{message} (at {path})")
        self.path = path


class PayloadTooLargeError(RequestError):
    """A request exceeds a configured limit (messages per add, text length, top_k)."""

    code = 413


class NotFoundError(RequestError):
    """An id does not exist (or was hard-deleted)."""

    code = 404


class MemoryNotFoundError(NotFoundError):
    """No memory item with that id."""


class TaskNotFoundError(NotFoundError):
    """No task with that id."""


class CubeNotFoundError(NotFoundError):
    """No cube with that id."""


class KnowledgeBaseNotFoundError(NotFoundError):
    """No knowledge base with that id."""


class PermissionDeniedError(RequestError):
    """The caller may not read or write that cube."""

    code = 403


class NotSupportedError(MemosError):
    """The operation needs a component that is not configured (for example an LLM)."""

    code = 501


class MissingDependencyError(MemosError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    code = 500

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package!r} is not installed; install it with: pip install 'memos-suite[{extra}]'")
        self.package = package
        self.extra = extra


class RuntimeFailure(MemosError):
    """The system failed while serving a valid request; retrying may help."""

    code = 500


class StoreError(RuntimeFailure):
    """The storage backend failed."""


class StoreBusyError(StoreError):
    """The store stayed locked by other writers past the busy timeout."""

    code = 503


class ConflictError(StoreError):
    """An item changed under a read-modify-write; re-read and try again."""

    code = 409


class LeaseLostError(ConflictError):
    """A worker tried to finish a task whose lease another worker has taken over."""


class EmbeddingError(RuntimeFailure):
    """The embedding model failed to embed a text."""


class TaskFailedError(RuntimeFailure):
    """A background task failed after all its retries."""


class LLMError(RuntimeFailure):
    """The LLM could not be reached, or it failed to answer."""


class LLMOutputError(LLMError):
    """The LLM answered, but not with the structured output asked for, after every retry."""
