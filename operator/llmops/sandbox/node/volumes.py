"""Pod volumes as local directories, and the per-pod root that stands in for the mount namespace.

Processes here cannot mount anything, so the agent gives every pod a directory ``root/`` and,
for each volumeMount, makes ``root/<mountPath>`` a symlink to the volume's local directory.
The rule a workload (or ``llmops_runtime``) follows is one line: inside a sandbox pod, the
absolute path P means ``$LLMOPS_SANDBOX_ROOT/P``. For convenience each mount is also exported
as ``LLMOPS_MOUNT_<PATH>`` (see ``spec.mount_env_name``) and all of them as the JSON map
``LLMOPS_SANDBOX_MOUNTS``. The container's working directory is ``root/<workingDir>``.

Where volumes live:
- emptyDir: ``<pod dir>/volumes/<name>``; ``medium: Memory`` under /dev/shm when it exists;
  removed with the pod.
- persistentVolumeClaim: ``<pvc root>/<namespace>/<claimName>``, one directory per claim shared
  by every pod that names it (the sandbox gives all its agents the same pvc root), kept.
- configMap / secret / downwardAPI / projected: files written once when the pod starts (items,
  keys, ``defaultMode``); later ConfigMap edits are not propagated.
- hostPath: the host path itself.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_runtime.localenv import SANDBOX_ROOT

from llmops.sandbox.node.spec import ConfigError, Lookup, Pod, field_ref, mount_env_name

#: JSON {mountPath: local directory} of a container's volumeMounts (sandbox only; read by ``runtimes.rooted``)
MOUNTS_ENV = "LLMOPS_SANDBOX_MOUNTS"

SHM = Path("/dev/shm")


@dataclass
class PodDirs:
    """Where one pod's files live; `volumes` maps volume name -> local directory."""

    base: Path
    root: Path
    logs: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    ephemeral: list[Path] = field(default_factory=list)  # removed when the pod goes away

    def cleanup(self) -> None:
        for path in self.ephemeral:
            shutil.rmtree(path, ignore_errors=True)


def _write_files(target: Path, data: Mapping[str, str], items: list[dict[str, Any]] | None, mode: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    selected = [(i["key"], i.get("path", i["key"]), i.get("mode", mode)) for i in items] if items else [
        (k, k, mode) for k in data
    ]
    for key, rel, file_mode in selected:
        if key not in data:
            raise ConfigError(f"configmap/secret key {key!r} not found")
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[key])
        os.chmod(path, file_mode)


def _source_files(pod: Pod, source: Mapping[str, Any], target: Path, lookup: Lookup, pod_ip: str) -> None:
    """configMap / secret / downwardAPI volume sources, also used for projected sources."""
    namespace = pod["metadata"].get("namespace", "default")
    mode = int(source.get("defaultMode", 0o644))
    for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
        ref = source.get(key)
        if ref is None:
            continue
        data = lookup(kind, namespace, ref.get(name_key) or ref.get("name", ""))
        if data is None:
            if ref.get("optional"):
                target.mkdir(parents=True, exist_ok=True)
                return
            raise ConfigError(f'{kind.lower()} "{ref.get(name_key) or ref.get("name")}" not found')
        _write_files(target, data, ref.get("items"), int(ref.get("defaultMode", mode)))
    if "downwardAPI" in source:
        items = source["downwardAPI"].get("items") or []
        data = {i["path"]: field_ref(pod, i["fieldRef"]["fieldPath"], pod_ip) for i in items if "fieldRef" in i}
        _write_files(target, data, None, mode)


def prepare(
    pod: Pod, pod_dir: Path, pvc_root: Path, lookup: Lookup, pod_ip: str
) -> PodDirs:
    """Create every volume of `pod` under `pod_dir` (idempotent for shared claims)."""
    uid = pod["metadata"].get("uid", "nouid")
    dirs = PodDirs(base=pod_dir, root=pod_dir / "root", logs=pod_dir / "logs")
    for d in (dirs.root, dirs.logs):
        d.mkdir(parents=True, exist_ok=True)
    dirs.ephemeral.append(pod_dir)
    namespace = pod["metadata"].get("namespace", "default")
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume["name"]
        local = pod_dir / "volumes" / name
        if "emptyDir" in volume:
            if (volume["emptyDir"] or {}).get("medium") == "Memory" and SHM.is_dir():
                local = SHM / "llmops-sandbox" / uid / name
                dirs.ephemeral.append(local.parent)
            local.mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in volume:
            local = pvc_root / namespace / volume["persistentVolumeClaim"]["claimName"]
            local.mkdir(parents=True, exist_ok=True)
        elif "hostPath" in volume:
            local = Path(volume["hostPath"]["path"])
            if (volume["hostPath"].get("type") or "") in ("DirectoryOrCreate",):
                local.mkdir(parents=True, exist_ok=True)
        elif "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    continue  # no tokens in the sandbox: pods reach the API through $KUBECONFIG
                _source_files(pod, source, local, lookup, pod_ip)
            local.mkdir(parents=True, exist_ok=True)
        elif any(k in volume for k in ("configMap", "secret", "downwardAPI")):
            _source_files(pod, volume, local, lookup, pod_ip)
        else:
            raise ConfigError(f"volume {name!r}: type not supported by the sandbox agent")
        dirs.volumes[name] = local
    return dirs


def mount(dirs: PodDirs, container: Mapping[str, Any]) -> dict[str, str]:
    """Link `container`'s volumeMounts into the pod root; return the env describing them."""
    env: dict[str, str] = {}
    mounts: dict[str, str] = {}
    for vm in container.get("volumeMounts") or []:
        if vm["name"] not in dirs.volumes:
            raise ConfigError(f'volumeMount "{vm["name"]}" names no volume')
        source = dirs.volumes[vm["name"]]
        if vm.get("subPath"):
            source = source / vm["subPath"]
            source.mkdir(parents=True, exist_ok=True)
        link = dirs.root / vm["mountPath"].lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            if link.is_symlink() and Path(os.readlink(link)) == source:
                pass  # same mount from a previous container of this pod
            else:
                if link.is_symlink() or link.is_file():
                    link.unlink()
                else:
                    shutil.rmtree(link)
                link.symlink_to(source, target_is_directory=True)
        else:
            link.symlink_to(source, target_is_directory=True)
        env[mount_env_name(vm["mountPath"])] = str(source)
        mounts[vm["mountPath"]] = str(source)
    env[SANDBOX_ROOT] = str(dirs.root)
    env[MOUNTS_ENV] = json.dumps(mounts, sort_keys=True)
    return env


def working_dir(dirs: PodDirs, container: Mapping[str, Any]) -> Path:
    wd = container.get("workingDir")
    if not wd:
        return dirs.root
    path = dirs.root / wd.lstrip("/")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
