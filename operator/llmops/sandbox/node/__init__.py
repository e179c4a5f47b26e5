"""The process node agent: runs the pods bound to one Node as local process groups.

Modules: ``spec`` (pure pod-spec helpers: quantities, env, $(VAR) expansion), ``volumes``
(volumes -> local directories), ``process`` (process groups, the orphan reaper, memory
polling), ``probes``, ``pod`` (one pod's lifecycle, kubelet-like status), ``agent`` (Node,
Lease heartbeat, watches, hosts file, faults).
"""

from llmops.sandbox.node.agent import NodeAgent, parse_capacity

__all__ = ["NodeAgent", "parse_capacity"]
