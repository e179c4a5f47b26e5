"""`llmops operator`: run the controller (in a cluster, or against any kubeconfig)."""

from __future__ import annotations

import argparse
import logging
import threading

from prometheus_client import start_http_server

from llmops.failures import NODE_LOST_GRACE_SECONDS, STARTUP_GRACE_SECONDS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("operator", help="run the operator")
    p.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    p.add_argument("--peering", default="llmops", help="Kopf peering name (default: llmops)")
    p.add_argument("--standalone", action="store_true", help="no peering (development only)")
    p.add_argument("--priority", type=int, default=100, help="peering priority")
    p.add_argument("--workers", type=int, default=4,
                   help="reconcile worker threads; a reconcile mostly waits on API requests, so a large "
                        "fleet creates pods faster with more (16 measured best: bench/README.md, operator_scale)")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    p.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="Kopf liveness endpoint")
    p.add_argument("--startup-grace-seconds", type=float, default=STARTUP_GRACE_SECONDS,
                   help="how long image-pull and container-config errors (a missing Secret) are tolerated "
                        f"before the job fails, holding no GPUs (default {STARTUP_GRACE_SECONDS})")
    p.add_argument("--node-lost-grace-seconds", type=float, default=NODE_LOST_GRACE_SECONDS,
                   help=f"how long a NotReady node counts as a blip before its pods are lost (default {NODE_LOST_GRACE_SECONDS})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmops.handlers import build_controller

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    controller = build_controller(
        args.kubeconfig,
        namespaces=args.namespace,
        peering_name=None if args.standalone else args.peering,
        priority=args.priority,
        workers=args.workers,
        liveness_endpoint=args.liveness or None,
        startup_grace_seconds=args.startup_grace_seconds,
        node_lost_grace_seconds=args.node_lost_grace_seconds,
    )
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=controller.metrics.registry)
    assert threading.current_thread() is threading.main_thread()
    controller.run(signals=True)
    return 0
