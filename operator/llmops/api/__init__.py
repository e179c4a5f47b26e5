"""The typed API (pydantic v2): the single source of truth for spec and status."""
