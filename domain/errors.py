"""Domain errors: a refusal with a stable code that every layer can pass on unchanged.

The HTTP layer maps codes to statuses in one place (`serve_app/errors.py`); actors
return these as replies instead of crashing.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command the business rules refuse."""

    def __init__(self, code: str, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword details do not survive the default Exception pickling, and errors
        # cross process boundaries as actor replies.
        return (_rebuild, (self.code, self.message, self.details))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DomainError) and (self.code, self.message, self.details) == (
            other.code,
            other.message,
            other.details,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"DomainError({self.code!r}, {self.message!r}, {self.details!r})"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


def _rebuild(code: str, message: str, details: dict[str, Any]) -> DomainError:
    return DomainError(code, message, **details)


def not_found(kind: str, entity_id: str) -> DomainError:
    return DomainError(f"{kind}_not_found", f"no {kind} {entity_id}", id=entity_id)


def forbidden(message: str) -> DomainError:
    return DomainError("forbidden", message)


def invalid(message: str, **details: Any) -> DomainError:
    return DomainError("invalid_request", message, **details)
