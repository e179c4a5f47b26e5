"""llmops-operator: the controller package (never imports torch, deepspeed or vllm)."""

GROUP = "llmops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
