"""What can be done to a model: trace it into a compression space and apply configs."""

from __future__ import annotations

from search_spaces._errors import InvalidConfigError, SearchSpaceError, TraceError

__all__ = ["InvalidConfigError", "SearchSpaceError", "TraceError"]
