"""The typed API (pydantic v2): the single source of truth for spec and status.

- ``common``: wire conventions, constrained scalars, shared spec sections, ApiValidationError;
- ``training`` / ``finetune`` / ``inference``: TrainingJob, FinetuneJob, InferenceService
  (spec, status, ``parse_*``);
- ``conditions``: condition types/reasons and ``set_condition``;
- ``labels``, ``runtime_env``, ``progress``: the label, env/exit-code and progress contracts.
"""
