"""Thin wiring: one reconcile function per kind, registered on the Controller."""

from __future__ import annotations

from llmops.controller import Controller


def build_controller(kubeconfig: str | None = None, **options: object) -> Controller:
    from llmops.handlers import finetunejob, inferenceservice, trainingjob

    controller = Controller(kubeconfig, **options)  # type: ignore[arg-type]
    controller.register("TrainingJob", "trainingjobs", trainingjob.reconcile)
    controller.register("FinetuneJob", "finetunejobs", finetunejob.reconcile)
    controller.register("InferenceService", "inferenceservices", inferenceservice.reconcile)
    return controller
