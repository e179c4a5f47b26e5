"""Code that runs inside the workload pods (trainer and server images). Never imports kopf."""


def __getattr__(name: str):
    # Lazy: ``import llmops_runtime as rt; rt.Session`` without importing torch for every
    # in-pod tool that only needs a submodule.
    if name in ("Session", "SessionConfig", "RuntimeExit"):
        from llmops_runtime import session

        return getattr(session, name)
    raise AttributeError(f"module 'llmops_runtime' has no attribute {name!r}")
