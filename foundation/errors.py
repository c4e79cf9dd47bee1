"""The error tree shared by every layer.

Core code (``online_store``, ``offline_store``) raises these; only the HTTP layer
(``service.app``) turns them into responses, in one exception handler, using each
class's ``status_code``. Nothing here imports FastAPI.

    FeatureStoreError (500)
    ├── InvalidRequestError (422)          bad input the caller can fix
    │   ├── InvalidEntityError             wrong entity key type, missing join key
    │   ├── InvalidTimestampError          unparseable or naive/aware mix-ups
    │   ├── SchemaMismatchError            pushed rows do not match the view schema
    │   ├── EntitySqlRefusedError          HTTP entity SQL that is not one SELECT over the views
    │   └── EntityPathRefusedError         an HTTP entity path outside FEATURESTORE_ENTITY_DIR
    ├── NotFoundError (404)
    │   ├── FeatureViewNotFoundError
    │   ├── FeatureNotFoundError
    │   ├── FeatureServiceNotFoundError
    │   ├── PushSourceNotFoundError
    │   └── JobNotFoundError
    ├── RequestTooLargeError (413)         too many entities / features / bytes
    │   └── MemoryLimitExceededError       a training query over its memory or spill limit
    ├── QueryTimeoutError (408)            a training query over its wall-clock limit
    ├── UnsupportedTypeError (422)         a feature type the online codec cannot store
    ├── ConflictError (409)                e.g. a materialization already running for a view
    ├── AuthenticationError (401)
    ├── PermissionDeniedError (403)
    ├── BackendUnavailableError (503)      Redis or the registry cannot be reached
    └── ServiceBusyError (503)             every training slot of the worker is taken
"""

from __future__ import annotations

import reprlib
from typing import Any, ClassVar

# Values quoted in messages are shortened: a hostile value nested a thousand deep or a
# megabyte long must not reach repr() whole (RecursionError, huge bodies).
_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 3, 60, 60


def show(value: Any) -> str:
    """A short ``repr`` of a caller's value for an error message, bounded in depth and size.

    Args:
        value: anything that arrived in a request.

    Returns:
        e.g. ``[[[[...]]]]`` for a deeply nested list, ``'aaa...aaa'`` for a long string.
    """
    return _SHOW.repr(value)


class FeatureStoreError(Exception):
    """Root of every error this project raises on purpose.

    Args:
        message: what failed, which object, and how to fix it.
        **details: extra JSON-serialisable fields returned to HTTP clients.
    """

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON body an HTTP client receives under ``"error"``."""
        return {"type": self.error_type, "message": self.message, **self.details}


class InvalidRequestError(FeatureStoreError):
    status_code = 422
    error_type = "invalid_request"


class InvalidEntityError(InvalidRequestError):
    error_type = "invalid_entity"


class InvalidTimestampError(InvalidRequestError):
    error_type = "invalid_timestamp"


class SchemaMismatchError(InvalidRequestError):
    error_type = "schema_mismatch"


class EntitySqlRefusedError(InvalidRequestError):
    error_type = "entity_sql_refused"


class EntityPathRefusedError(InvalidRequestError):
    error_type = "entity_path_refused"


class UnsupportedTypeError(FeatureStoreError):
    status_code = 422
    error_type = "unsupported_type"


class NotFoundError(FeatureStoreError):
    status_code = 404
    error_type = "not_found"


class FeatureViewNotFoundError(NotFoundError):
    error_type = "feature_view_not_found"


class FeatureNotFoundError(NotFoundError):
    error_type = "feature_not_found"


class FeatureServiceNotFoundError(NotFoundError):
    error_type = "feature_service_not_found"


class PushSourceNotFoundError(NotFoundError):
    error_type = "push_source_not_found"


class JobNotFoundError(NotFoundError):
    error_type = "job_not_found"


class RequestTooLargeError(FeatureStoreError):
    status_code = 413
    error_type = "request_too_large"


class MemoryLimitExceededError(RequestTooLargeError):
    error_type = "memory_limit_exceeded"


class QueryTimeoutError(FeatureStoreError):
    status_code = 408
    error_type = "query_timeout"


class ConflictError(FeatureStoreError):
    status_code = 409
    error_type = "conflict"


class AuthenticationError(FeatureStoreError):
    status_code = 401
    error_type = "unauthenticated"
    headers = {"WWW-Authenticate": "Bearer"}


class PermissionDeniedError(FeatureStoreError):
    status_code = 403
    error_type = "permission_denied"


class BackendUnavailableError(FeatureStoreError):
    status_code = 503
    error_type = "backend_unavailable"


class ServiceBusyError(FeatureStoreError):
    status_code = 503
    error_type = "service_busy"
    headers = {"Retry-After": "5"}
