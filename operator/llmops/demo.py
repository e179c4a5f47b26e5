"""`llmops demo`: the main job on the embedded sandbox, start to finish, in one command.

Starts `llmops sandbox` (emulated API server, 2 process node agents, S3 on 127.0.0.1, the
operator; with ``--control-plane`` the same on a real kube-apiserver/scheduler/controller
manager), applies the tiny sample TrainingJob with kubectl, prints its status as it trains
with step checkpoints, kills one worker mid-run, and shows the gang restart and resume from
the last committed step until the job succeeds. Exit code 0 only if all of that happened.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from llmops import API_VERSION
from llmops.sandbox.cli import add_control_plane_flag

SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "trainingjob-tiny-cpu.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the embedded sandbox (no cluster needed)")
    p.add_argument("--workdir", default=".sandbox", help="sandbox working directory (default .sandbox)")
    p.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    p.add_argument("--kill-after-checkpoint", type=int, default=10,
                   help="kill a worker once a checkpoint at this step is committed (0: no kill)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before giving up")
    add_control_plane_flag(p)
    p.set_defaults(func=run)


def _line(tj: dict) -> str:
    st = tj.get("status") or {}
    prog = st.get("progress") or {}
    parts = [
        f"attempt={st.get('attempt', 0)}",
        "conditions=" + (",".join(c["type"] for c in st.get("conditions", []) if c["status"] == "True") or "-"),
        f"step={prog.get('step', 0)}/{prog.get('totalSteps', '?')}",
    ]
    if prog.get("loss") is not None:
        parts.append(f"loss={prog['loss']:.3f}")
    parts.append(f"checkpoint={(st.get('checkpoint') or {}).get('step', '-')}")
    parts.append(f"restarts={(st.get('restarts') or {}).get('total', 0)}")
    return " ".join(parts)


def _true(tj: dict, type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in (tj.get("status") or {}).get("conditions", []))


def run(args: argparse.Namespace) -> int:
    from llmops.sandbox import missing_extra

    if problem := missing_extra():
        print(f"llmops demo: {problem}", file=sys.stderr)
        return 2
    from llmops.kube.client import Kube, load_api_client
    from llmops.sandbox.run import Sandbox

    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    body = yaml.safe_load(SAMPLE.read_text())
    body["spec"]["totalSteps"] = args.steps
    body["spec"].setdefault("template", {})["env"] = [{"name": "TRAIN_STEP_DELAY", "value": "0.1"}]
    name = body["metadata"]["name"]
    print(f"starting the sandbox in {workdir} ...", flush=True)
    with Sandbox(nodes=2, workdir=workdir, operator=True, control_plane=args.control_plane) as sb:
        where = "on a real control plane" if sb.real else "on the emulated API server"
        print(f"sandbox up {where} in {sb.start_seconds:.2f}s; try: export KUBECONFIG={sb.kubeconfig}; kubectl get llmops", flush=True)
        print(f"$ kubectl apply -f {SAMPLE.relative_to(Path.cwd()) if SAMPLE.is_relative_to(Path.cwd()) else SAMPLE}")
        subprocess.run(["kubectl", "--kubeconfig", sb.kubeconfig, "apply", "-f", "-"],
                       input=yaml.safe_dump(body), text=True, check=True)
        kube = Kube(load_api_client(sb.kubeconfig))
        deadline = time.monotonic() + args.timeout
        killed_at: int | None = None
        last = ""
        tj: dict = {}
        while time.monotonic() < deadline:
            tj = kube.get(API_VERSION, "TrainingJob", "default", name) or {}
            line = _line(tj)
            if line != last:
                print(f"  {line}", flush=True)
                last = line
            st = tj.get("status") or {}
            if _true(tj, "Succeeded") or _true(tj, "Failed"):
                break
            ckpt = (st.get("checkpoint") or {}).get("step", 0)
            if killed_at is None and args.kill_after_checkpoint and ckpt >= args.kill_after_checkpoint and _true(tj, "Running"):
                killed_at = (st.get("progress") or {}).get("step", ckpt)
                pod = f"{name}-w1-a{st.get('attempt', 0)}"
                print(f"  >>> killing worker pod {pod} (SIGKILL) at step ~{killed_at}; last committed checkpoint: step {ckpt}", flush=True)
                sb.fault("default", pod, "kill")
            time.sleep(0.5)
        print(subprocess.run(["kubectl", "--kubeconfig", sb.kubeconfig, "get", "tj", name],
                             capture_output=True, text=True).stdout)
        st = tj.get("status") or {}
        ok = _true(tj, "Succeeded")
        if killed_at is not None:
            resumed = st.get("resumedFromStep")
            print(f"restarts: {st.get('restarts')}; resumed from step {resumed} "
                  f"(killed at ~{killed_at}: {killed_at - (resumed or 0)} steps recomputed)")
            ok = ok and (st.get("restarts") or {}).get("total") == 1 and resumed is not None
        print("demo: OK" if ok else f"demo: FAILED (see {workdir / 'operator.log'})")
        return 0 if ok else 1

