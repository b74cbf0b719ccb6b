"""Idle GPUs on the compose machines of the `ssh` and `local` targets: what `coderig:idle` adds to a node.
Pure: returns compose fragments, command-line arguments and the files the services need.

With an idle policy, on the first machine:
  keepalive  the relay (the one hop to every model server) also holds and wakes: `--wake sleep|stop`,
             its control API on RELAY_CONTROL (loopback)
  reaper     coderig.runtime.node_reaper: reads the relay's counters and every model server's /metrics
             (a replica's through its link), decides with idle.decide, and sleeps or stops the model
  model      with `sleep`: vLLM gets --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1, which adds the
             /sleep, /wake_up and other admin routes (unauthenticated in vLLM 0.28): the model server
             listens on 127.0.0.1 and a replica's only behind its mutual-TLS link, and the gateway's
             allow-list forwards none of them.
With `stop`, only the reaper holds the docker socket; the relay asks it to start the model container on
REAPER_CONTROL (loopback), the one thing that port does. The gateway and relay containers never see it.
"""

from __future__ import annotations

from typing import Any

from coderig.core import budgets, engine, versions
from coderig.core.files import FileSet, RenderedFile
from coderig.core.settings import StackSettings
from coderig.runtime import aws_wake, idle
from coderig.runtime.scripts import script_text
from coderig.targets.compose.machines import NodeSpec

REAPER_SERVICE = "reaper"
RELAY_CONTROL = f"{engine.MODEL_HOST}:4190"  # the relay's control API (GET /state, POST /hold, /settled)
REAPER_CONTROL = f"{engine.MODEL_HOST}:4191"  # stop: the reaper's "start the model container" port
MODEL_CONTAINER = "coderig-model-1"  # compose's name for the model service's container (project coderig)
STATE_DIR = "idle"  # bundle directory for the reaper's state file
STATE_MOUNT = "/var/lib/coderig-idle"
# the stdlib modules the relay and the reaper run, shipped below the keepalive directory
RUNTIME_MODULES = (
    "sse_keepalive.py",
    "relay_wake.py",
    "relay_shapes.py",
    "wake.py",
    "node_reaper.py",
    "idle.py",
    "http.py",
)
EC2_MODULES = ("aws_wake.py", "aws_reaper.py")  # --wake ec2: the waker and the tags it shares with the reaper


def action(settings: StackSettings) -> str | None:
    """What an idle model undergoes on this stack (None: no idle policy, or not a compose target)."""
    if not settings.idle.enabled or not settings.target.idle_actions or not settings.target.serves_model:
        return None
    if settings.idle.action:
        return settings.idle.action
    if settings.model.spec.engine == "vllm":
        return "sleep"
    # stop reaches the model of the machine the reaper runs on only: one host, no separate front door
    alone = settings.target.replica_count == 1 and settings.target.front_door_machine is None
    return "stop" if alone else None


def plan_note(settings: StackSettings) -> str | None:
    """One line for the plan: what idling does here, and what sleep needs of host RAM."""
    act = action(settings)
    if act is None:
        return None
    weights = settings.model.spec.weight_bytes / 1e9
    if act == "sleep":
        return (
            f"idle: after {settings.idle.stop_after_minutes} min without requests the model sleeps (vLLM sleep "
            f"level 1): GPU memory freed, the weights ({weights:.0f} GB) wait in host RAM, which must hold them "
            "(the preflight checks each host); the next request wakes it: the weights are copied back to the GPUs"
        )
    why = "" if settings.idle.action == "stop" else f" ({settings.model.spec.engine} has no sleep mode)"
    return (
        f"idle: after {settings.idle.stop_after_minutes} min without requests the model container stops{why}; "
        f"the next request starts it again, reading the weights ({weights:.0f} GB) from the cache volume"
    )


def model_overrides(settings: StackSettings) -> tuple[list[str], dict[str, str]]:
    """Extra vLLM arguments and environment: sleep mode only when the action is sleep."""
    if action(settings) != "sleep":
        return [], {}
    return ["--enable-sleep-mode"], {"VLLM_SERVER_DEV_MODE": "1"}


def machine_wake(settings: StackSettings) -> dict[str, str] | None:
    """With an idle policy, how a separate front-door machine's relay starts the GPU machines the
    policy stopped (aws: `--wake ec2`; None where the target does not stop machines)."""
    return settings.target.machine_wake if settings.idle.enabled and settings.target.serves_model else None


def relay_args(settings: StackSettings, spec: NodeSpec) -> list[str]:
    """What the relay's command gains where requests must wait for a model: on the first machine
    (sleep, stop), or on a front-door machine before replicas (sleep through their links; ec2)."""
    act, machine = action(settings), machine_wake(settings)
    served = ["--served-name", settings.model.served_name]
    if machine and _fronts_replicas(spec):
        args = [a for key, value in machine.items() for a in (f"--{key}", value)]
        return [*args, "--control", RELAY_CONTROL, "--start-budget", str(_start_budget(settings, spec)), *served]
    if act is None or not _acts_here(act, spec):
        return []
    args = ["--wake", act, "--control", RELAY_CONTROL, "--start-budget", str(_budget(settings)), *served]
    return args + (["--reaper", f"http://{REAPER_CONTROL}"] if act == "stop" else [])


def _budget(settings: StackSettings) -> int:
    return budgets.load_budget_seconds(settings.model.spec)


def _start_budget(settings: StackSettings, spec: NodeSpec) -> int:
    """The model's load; before replicas on stopped machines (ec2) also their boot, after waiting for
    one still stopping (aws_wake.STOP_WAIT_S)."""
    if machine_wake(settings) and _fronts_replicas(spec):
        return _budget(settings) + budgets.EC2_BOOT_S + int(aws_wake.STOP_WAIT_S)
    return _budget(settings)


def _fronts_replicas(spec: NodeSpec) -> bool:
    """A front-door machine before our own replicas (not the first GPU machine, not an external endpoint)."""
    return spec.runs_front_door and not spec.runs_model and bool(spec.replica_links)


def _acts_here(act: str, spec: NodeSpec) -> bool:
    """The relay and reaper for `act` run on this machine: the first machine, or a front door before
    replicas whose models sleep (reached through their links; `stop` needs the model's own docker)."""
    return (spec.runs_model and spec.runs_front_door) or (act == "sleep" and _fronts_replicas(spec))


def _reaper_action(settings: StackSettings, spec: NodeSpec) -> tuple[str, list[str]] | None:
    """(node_reaper --action, its extra flags) on this machine, or None: it runs no reaper."""
    act, machine = action(settings), machine_wake(settings)
    if machine and _fronts_replicas(spec):
        options = [a for key, value in machine.items() if key != "wake" for a in (f"--{key}", value)]
        return machine["wake"], options
    if act and _acts_here(act, spec):
        return act, (["--container", MODEL_CONTAINER, "--control", REAPER_CONTROL] if act == "stop" else [])
    return None


def reaper_service(settings: StackSettings, spec: NodeSpec, code_dir: str, code_mount: str) -> dict[str, Any] | None:
    """The reaper on the first machine, or on the aws front door (None without an idle policy): the
    pinned LiteLLM image has python3 (and boto3, for ec2); the stdlib modules come from the bundle."""
    found = _reaper_action(settings, spec)
    if found is None:
        return None
    act, extra = found
    models = [f"http://{b}" for b in _model_hostports(spec)]
    command = [
        "python3",
        "-m",
        "coderig.runtime.node_reaper",
        "--relay",
        f"http://{RELAY_CONTROL}",
        *(a for m in models for a in ("--model", m)),
        "--action",
        act,
        "--stop-after-minutes",
        str(settings.idle.stop_after_minutes),
        "--period",
        str(settings.idle.periodSeconds or idle.DEFAULT_PERIOD_SECONDS),
        "--model-name",
        settings.model.served_name,
        "--start-budget",
        str(_start_budget(settings, spec)),
        "--state-file",
        f"{STATE_MOUNT}/reaper.json",
        *extra,
    ]
    volumes = [f"./{code_dir}:{code_mount}:ro", f"./{STATE_DIR}:{STATE_MOUNT}"]
    if act == "stop":
        volumes.append("/var/run/docker.sock:/var/run/docker.sock")  # this service only
    return stdlib_service(command, code_mount, volumes, idle.policy_env(settings.idle.schedule(), settings.idle.dryRun))


def stdlib_service(
    command: list[str], code_mount: str, volumes: list[str], environment: dict[str, str] | None = None
) -> dict[str, Any]:
    """A service that runs one of coderig's stdlib runtime modules (`python3 -m coderig.runtime.…`)
    from the bundle mounted at `code_mount`: the pinned LiteLLM image has python3."""
    return {
        "image": versions.LITELLM_IMAGE,
        "network_mode": "host",
        "restart": "unless-stopped",
        "entrypoint": command[:3],
        "command": command[3:],
        "environment": {"PYTHONPATH": code_mount, "PYTHONDONTWRITEBYTECODE": "1", **(environment or {})},
        "volumes": volumes,
    }


def services(settings: StackSettings, spec: NodeSpec, code_dir: str, code_mount: str) -> dict[str, Any]:
    reaper = reaper_service(settings, spec, code_dir, code_mount)
    return {REAPER_SERVICE: reaper} if reaper else {}


def runtime_files(settings: StackSettings, code_dir: str) -> FileSet:
    """The stdlib modules the relay (--wake) and the reaper import, below the keepalive directory."""
    if action(settings) is None and machine_wake(settings) is None:
        return {}
    names = RUNTIME_MODULES + (EC2_MODULES if machine_wake(settings) else ())
    return {f"{code_dir}/coderig/runtime/{name}": RenderedFile(script_text(name)) for name in names}


def _model_hostports(spec: NodeSpec) -> list[str]:
    """host:port of each model server as the first machine reaches it (its own, then the links)."""
    return [b.removeprefix("http://").removesuffix("/v1") for b in spec.backends]
