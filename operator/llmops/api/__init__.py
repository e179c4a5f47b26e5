"""The typed API (pydantic v2): the single source of truth for spec and status.

Building blocks, by subject:

- ``wire``: group/version, the spec/status base models (camelCase, unknown fields), ObjectMeta;
- ``scalars``: constrained scalar types (names, label keys/values, quantities, URIs) and bounds;
- ``schema`` / ``cel``: structural-schema markers (keyed lists, sets) and CEL rule helpers;
- ``errors`` / ``parse``: ApiValidationError with field paths, and parsing a whole body;
- spec sections shared by the jobs: ``resources`` (resources, network), ``scheduling``,
  ``checkpoint``, ``policy`` (failure and run policy), ``template`` (the narrow pod template).

The kinds and their contracts:

- ``training`` / ``finetune`` / ``inference``: TrainingJob, FinetuneJob, InferenceService
  (spec, status, ``parse_*``);
- ``conditions``: condition types/reasons and ``set_condition``;
- ``labels``, ``runtime_env``, ``progress``: the label, env/exit-code and progress contracts;
- ``quantity``: parsing and formatting resource quantities.
"""
