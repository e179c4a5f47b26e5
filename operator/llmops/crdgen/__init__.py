"""CRD generation: pydantic models (llmops.api) -> crds/llmops.dev_<plural>.yaml."""
