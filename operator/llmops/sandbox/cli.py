"""`llmops sandbox` (the embedded control plane) and `llmops node` (one process node agent)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from llmops.sandbox.node.runtimes import SERVING_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    sb = subparsers.add_parser("sandbox", help="run an emulated cluster on this machine (API, nodes, S3, operator)")
    sb.add_argument("--nodes", type=int, default=2, help="node agents to start (default 2)")
    sb.add_argument("--gpus-per-node", type=int, default=0, help="nvidia.com/gpu capacity per node (default 0)")
    sb.add_argument("--capacity", default="cpu=8,memory=32Gi", help="per-node capacity, NAME=QUANTITY,...")
    sb.add_argument("--workdir", default=".sandbox", help="state directory; kubeconfig goes here (default .sandbox)")
    sb.add_argument("--port", type=int, default=0, help="API server port (default: a free one)")
    sb.add_argument("--no-operator", action="store_true", help="do not start the operator")
    sb.add_argument("--no-s3", action="store_true", help="do not start the S3 server")
    sb.add_argument("--serving", choices=SERVING_CHOICES, default="vllm",
                    help="what the nodes run for the vLLM server image: vllm (the vLLM venv, default) or standin (test double)")
    add_control_plane_flag(sb)
    sb.set_defaults(func=run_sandbox)

    node = subparsers.add_parser("node", help="run a process node agent against a kubeconfig")
    node.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG)")
    node.add_argument("--name", required=True, help="Node name to register")
    node.add_argument("--capacity", default="cpu=4,memory=16Gi", help="NAME=QUANTITY,... incl. extended resources")
    node.add_argument("--workdir", default=".sandbox-node", help="pod directories, logs, hosts file")
    node.add_argument("--pod-cidr", default="127.1.0.0/16", help="loopback network for pod IPs")
    node.add_argument("--pvc-dir", help="directory holding one subdirectory per claim (default WORKDIR/pvc)")
    node.add_argument("--label", action="append", default=[], help="extra node label KEY=VALUE")
    node.add_argument("--deregister", action="store_true", help="delete the Node on exit")
    node.add_argument("--serving", choices=SERVING_CHOICES, default="vllm",
                      help="what this node runs for the vLLM server image: vllm (the vLLM venv, default) or standin (test double)")
    node.set_defaults(func=run_node)


def add_control_plane_flag(parser: argparse.ArgumentParser) -> None:
    """``--control-plane [KUBE_DIR|KUBECONFIG]``: a real control plane instead of the emulated API server."""
    parser.add_argument(
        "--control-plane", nargs="?", const=True, default=None, metavar="KUBE_DIR|KUBECONFIG",
        help="run on a real Kubernetes control plane instead of the emulated API server: started from KUBE_DIR "
             "(start.sh/stop.sh; default $LLMOPS_KUBE_DIR or ../shared/kube), or the running cluster of KUBECONFIG; "
             "the same node agents, S3 and operator join it",
    )  # fmt: skip


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass


def run_sandbox(args: argparse.Namespace) -> int:
    from llmops.sandbox import missing_extra

    if problem := missing_extra(s3=not args.no_s3):
        print(f"llmops sandbox: {problem}", file=sys.stderr)
        return 2
    from llmops.sandbox.run import Sandbox, operator_available

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir).resolve()
    sandbox = Sandbox(
        nodes=args.nodes, capacity=args.capacity, gpus_per_node=args.gpus_per_node, workdir=workdir,
        port=args.port, operator=not args.no_operator, s3=not args.no_s3, serving=args.serving,
        control_plane=args.control_plane,
    )  # fmt: skip
    # Signals during start-up must still stop what has started.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        sandbox.start()
        kind = "real control plane" if sandbox.real else "emulated API"
        print(f"llmops sandbox up in {sandbox.start_seconds:.2f}s: {kind} {sandbox.api_url}, {args.nodes} node(s)")
        if sandbox.s3_endpoint:
            print(f"  S3:       {sandbox.s3_endpoint}  (AWS_ENDPOINT_URL_S3; key 'sandbox' / 'sandbox-secret')")
        if sandbox.operator is not None:
            print(f"  operator: running, log {workdir / 'operator.log'}")
        elif not args.no_operator and not operator_available():
            print("  operator: not started (llmops.handlers is not installed)")
        if sandbox.real:  # a real API server asks the kubelet for logs, and these nodes have none
            print(f"  pod logs: {workdir / 'nodes'}/NODE/pods/NAMESPACE_POD_UID/logs (kubectl logs needs a kubelet)")
        print(f"\n  export KUBECONFIG={sandbox.kubeconfig}\n  kubectl get nodes\n\nCtrl-C stops everything.", flush=True)
        _wait_for_signal()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sandbox.stop()
        print("llmops sandbox stopped", file=sys.stderr)
    return 0


def run_node(args: argparse.Namespace) -> int:
    from llmops.sandbox.node.agent import NodeAgent, parse_capacity
    from llmops.sandbox.node.client import Kube
    from llmops.sandbox.node.runtimes import serving_runtimes

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    labels = dict(item.split("=", 1) for item in args.label)
    agent = NodeAgent(
        Kube(args.kubeconfig), args.name, parse_capacity(args.capacity), args.workdir,
        pod_cidr=args.pod_cidr, pvc_root=args.pvc_dir, labels=labels, pod_kubeconfig=args.kubeconfig,
        runtimes=serving_runtimes(args.serving),
    )  # fmt: skip
    agent.start()
    print(f"node {args.name} registered; running its pods (Ctrl-C stops)", flush=True)
    try:
        _wait_for_signal()
    finally:
        agent.stop(deregister=args.deregister)
    return 0
