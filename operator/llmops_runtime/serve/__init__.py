"""Serving-side in-pod code: the verified model fetcher (``fetch``), model manifests
(``manifest``) and the vLLM stand-in test double (``standin``). See docs/serving-runtime.md."""
