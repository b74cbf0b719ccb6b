"""The "scale" Waker: a kubernetes stack's model Deployment at zero replicas (scaled there by the idle
reaper, coderig.runtime.kube_reaper) is scaled back when a request arrives. Standard library only; it
uses the reaper's API client (urllib, a service-account token, the cluster CA) and needs get/patch of
`deployments/scale` of the model Deployment and get of the Deployment; with `state_configmap`, also get
of the reaper's state ConfigMap (where the reaper records how many replicas it stopped). In the
front-door pod (`--wake scale`, `from_env`) it runs as `coderig-wake`, which has the first two only and
scales back to the stack's replicas.

It implements the Waker interface of coderig.runtime.wake (IDLE owns it): `name`, `state()`, `wake()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coderig.runtime.idle import ReaperError
from coderig.runtime.kube_reaper import SA_DIR, KubeApi


class _WakeError(RuntimeError):
    """One-line reason a wake failed (shown to the client in its own error shape)."""


def _wake_error() -> type[RuntimeError]:
    """coderig.runtime.wake's WakeError (IDLE's shared interface); the same shape until it is merged."""
    try:
        from coderig.runtime.wake import WakeError  # pyright: ignore[reportMissingImports]
    except ImportError:
        return _WakeError
    return WakeError  # pyright: ignore[reportUnknownVariableType]


WakeError = _wake_error()


class ScaleWaker:
    name = "scale"

    def __init__(
        self, api: KubeApi, namespace: str, deployment: str, state_configmap: str | None = None, replicas: int = 1
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.deployment = deployment
        self.state_configmap = state_configmap
        self.replicas = max(1, replicas)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ScaleWaker:
        """The relay's waker in the front-door pod (`--wake scale`): the API server from the pod's
        KUBERNETES_SERVICE_HOST/PORT, the token and CA its projected service-account volume mounts (the
        `coderig-wake` account: coderig.targets.kubernetes.wake), the Deployment from CODERIG_NAMESPACE,
        CODERIG_DEPLOYMENT and CODERIG_REPLICAS. CODERIG_SA_DIR moves the token directory (a relay run
        outside a pod, as the tests run it). ValueError names what is missing."""
        missing = [k for k in ("KUBERNETES_SERVICE_HOST", "CODERIG_NAMESPACE", "CODERIG_DEPLOYMENT") if not env.get(k)]
        if missing:
            raise ValueError(f"--wake scale needs {', '.join(missing)} in the environment (set in the front-door pod)")
        host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT") or "443"
        sa_dir = Path(env.get("CODERIG_SA_DIR") or SA_DIR)
        try:
            replicas = int(env.get("CODERIG_REPLICAS") or "1")
        except ValueError:
            raise ValueError(f"CODERIG_REPLICAS: {env['CODERIG_REPLICAS']!r} is not a number") from None
        base = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        api = KubeApi(base, sa_dir / "token", sa_dir / "ca.crt")
        return cls(api, env["CODERIG_NAMESPACE"], env["CODERIG_DEPLOYMENT"], replicas=replicas)

    def _read(self) -> dict[str, Any]:
        return self.api.deployment(self.namespace, self.deployment)

    def state(self) -> str:
        """ "stopped" at zero replicas, "awake" with a ready replica, "waking" in between; "unknown"
        when the API server cannot be read."""
        try:
            dep = self._read()
        except ReaperError:
            return "unknown"
        spec = int((dep.get("spec") or {}).get("replicas") or 0)
        ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
        if spec == 0:
            return "stopped"
        return "awake" if ready > 0 else "waking"

    def target_replicas(self) -> int:
        """What the reaper stopped (its state's `replicas_before`), else the stack's replicas."""
        if self.state_configmap:
            try:
                before = self.api.read_state(self.namespace, self.state_configmap).get("replicas_before")
            except ReaperError:
                before = None
            if isinstance(before, int) and before > 0:
                return before
        return self.replicas

    def wake(self) -> None:
        """Scale the Deployment back; nothing when it already has replicas (idempotent)."""
        try:
            if int((self._read().get("spec") or {}).get("replicas") or 0) > 0:
                return
            self.api.scale(self.namespace, self.deployment, self.target_replicas())
        except ReaperError as exc:
            raise WakeError(f"cannot scale {self.namespace}/{self.deployment} back up: {exc}") from exc
