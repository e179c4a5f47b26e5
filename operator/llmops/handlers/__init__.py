"""Thin wiring: the reconcile driver with one plug-in per kind, registered on the Controller."""

from __future__ import annotations

from llmops.controller import Controller


def build_controller(kubeconfig: str | None = None, **options: object) -> Controller:
    from llmops.handlers.driver import Driver
    from llmops.handlers.finetunejob import FinetuneJobKind
    from llmops.handlers.inferenceservice import InferenceServiceKind
    from llmops.handlers.trainingjob import TrainingJobKind

    controller = Controller(kubeconfig, **options)  # type: ignore[arg-type]
    controller.register("TrainingJob", "trainingjobs", Driver(TrainingJobKind()))
    controller.register("FinetuneJob", "finetunejobs", Driver(FinetuneJobKind()))
    controller.register("InferenceService", "inferenceservices", Driver(InferenceServiceKind()))
    return controller
