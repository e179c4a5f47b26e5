"""llmops-operator: the controller package (never imports torch, deepspeed or vllm)."""

from typing import Final

#: apiVersion of the three kinds, spelled as one literal so that type checkers see the value the
#: models' ``apiVersion`` field (a ``Literal``) accepts; the group and version derive from it.
API_VERSION: Final = "llmops.dev/v1alpha1"
GROUP, VERSION = API_VERSION.split("/")
