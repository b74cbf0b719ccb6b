"""Shared test helpers: stack files, and a Pulumi mock harness that records every resource.

Pulumi's mock state is process-global: `run_program` gives each call a fresh event loop, resets
the runtime options and config, and returns what was registered and exported.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.config as runtime_config
import pytest
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmTxRrbuLsZJ9k4gqWX1eA2S3hrY2dcBz9ZJdUcKXS1"


def write_stack(tmp_path: Path, config: dict[str, Any], name: str = "test") -> Path:
    """Write a Pulumi.<name>.yaml whose `config:` holds the given `coderig:` keys (prefix added)."""
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": {f"coderig:{k}": v for k, v in config.items()}}))
    return path


def ssh_config(**model: Any) -> dict[str, Any]:
    return {
        "target": {
            "kind": "ssh",
            "gpu": {"model": "H200", "count": 8},
            "hosts": [{"address": "gpu1.internal", "user": "ubuntu", "hostKey": HOST_KEY}],
        },
        "sshPrivateKey": {"secure": "v1:opaque"},
        "model": {"preset": "deepseek-v3.2", "maxModelLen": 131072, **model},
        "developers": ["alice", "bob"],
    }


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None
    # what the engine is asked besides the inputs (from the monitor's RegisterResourceRequest;
    # left at these defaults for reads)
    custom: bool = False
    parent: str = ""  # URN
    dependencies: list[str] = field(default_factory=list)  # URNs of depends_on (and parents' deps)
    delete_before_replace: bool = False
    additional_secret_outputs: list[str] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)
    replace_on_changes: list[str] = field(default_factory=list)
    retain_on_delete: bool | None = None  # None: not set
    custom_timeouts: Any = None  # the request's CustomTimeouts (.create, .update, .delete) or None
    id: str | None = None

    @property
    def parent_key(self) -> tuple[str, str] | None:
        """(type, name) of the parent, from its URN (`urn:pulumi:STACK::PROJECT::A$B$TYPE::NAME`)."""
        if not self.parent:
            return None
        _, _, qualified, name = self.parent.split("::", 3)
        return qualified.rsplit("$", 1)[-1], name

    @property
    def dependency_names(self) -> set[str]:
        """The names (last URN segment) of the resources this one explicitly depends on."""
        return {urn.rsplit("::", 1)[-1] for urn in self.dependencies}


@dataclass
class ProgramRun:
    resources: list[Registered] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    error: BaseException | None = None

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, name: str) -> Registered:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"{name}: {len(found)} resources; have {[r.name for r in self.resources]}"
        return found[0]

    def of_prefix(self, prefix: str) -> list[Registered]:
        """Resources whose type token starts with `prefix` (e.g. "aws:ec2/instance:")."""
        return [r for r in self.resources if r.typ.startswith(prefix)]

    def deps(self, name: str) -> set[str]:
        """Names of the resources `name` explicitly depends on."""
        return self.named(name).dependency_names


def fake_outputs(typ: str, name: str) -> dict[str, Any]:
    """Provider-computed outputs the mocks must invent (deterministic per resource name)."""
    pem = f"-----BEGIN FAKE {typ.split(':')[-1].upper()}-----\n{name}\n-----END FAKE-----\n"
    return {
        "random:index/randomPassword:RandomPassword": {"result": f"pw{zlib.crc32(name.encode()):010d}{name}"},
        "tls:index/privateKey:PrivateKey": {"private_key_pem": pem, "public_key_openssh": f"ssh-ed25519 AAAA{name}"},
        "tls:index/selfSignedCert:SelfSignedCert": {"cert_pem": pem},
        "tls:index/certRequest:CertRequest": {"cert_request_pem": pem},
        "tls:index/locallySignedCert:LocallySignedCert": {"cert_pem": pem},
        "command:remote:Command": {"stdout": "", "stderr": ""},
        "command:local:Command": {"stdout": "", "stderr": ""},
    }.get(typ, {})


CallHandler = Callable[[str, dict[str, Any]], dict[str, Any]]
# Per-test provider outputs: given the resource (already recorded in the run) return None for the
# defaults, or (id or None for the default id, outputs laid over fake_outputs and under the inputs).
ResourceHook = Callable[[pulumi.runtime.MockResourceArgs, ProgramRun], tuple[str | None, dict[str, Any]] | None]


class Recorder(pulumi.runtime.Mocks):
    def __init__(self, run: ProgramRun, calls: CallHandler | None = None, resources: ResourceHook | None = None):
        self.run = run
        self.calls = calls
        self.resources = resources
        self.requests = threading.local()  # the monitor request being served on this thread

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        reg = Registered(args.typ, args.name, dict(args.inputs), args.provider, custom=bool(args.custom))
        request = getattr(self.requests, "current", None)
        if request is not None and request.name == args.name and request.type == args.typ:
            reg.parent = request.parent
            reg.dependencies = list(request.dependencies)
            reg.delete_before_replace = bool(request.deleteBeforeReplace)
            reg.additional_secret_outputs = list(request.additionalSecretOutputs)
            reg.ignore_changes = list(request.ignoreChanges)
            reg.replace_on_changes = list(request.replaceOnChanges)
            reg.retain_on_delete = request.retainOnDelete if request.HasField("retainOnDelete") else None
            reg.custom_timeouts = request.customTimeouts if request.HasField("customTimeouts") else None
        self.run.resources.append(reg)
        rid, extra = f"{args.name}-id", {}
        hooked = self.resources(args, self.run) if self.resources is not None else None
        if hooked is not None:
            rid, extra = hooked[0] or rid, hooked[1]
        reg.id = rid
        return rid, {**fake_outputs(args.typ, args.name), **extra, **dict(args.inputs)}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        self.run.calls.append((args.token, dict(args.args)))
        if self.calls is not None:
            return self.calls(args.token, dict(args.args)), []
        return {}, []


class RecordingMonitor(MockMonitor):
    """The mock monitor, also handing the Recorder the request (dependencies, options), which
    MockResourceArgs does not carry."""

    def __init__(self, recorder: Recorder):
        super().__init__(recorder)
        self.recorder = recorder

    def RegisterResource(self, request):  # noqa: N802 - the gRPC method name
        self.recorder.requests.current = request
        try:
            return super().RegisterResource(request)
        finally:
            self.recorder.requests.current = None


def run_program(
    config: dict[str, Any],
    program: Callable[[], dict[str, Any]] | None = None,
    *,
    stack: str = "test",
    calls: CallHandler | None = None,
    resources: ResourceHook | None = None,
) -> ProgramRun:
    """Run `stacks.build()` (or `program`) under mocks with the given `coderig:` config.

    Values of the keys in settings.SECRET_KEYS are passed as Pulumi secrets, like `--secret`.
    `calls` answers invokes; `resources` overrides provider outputs (see ResourceHook).
    """
    from coderig.core.settings import SECRET_KEYS

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.reset_options(project="coderig", stack=stack, preview=False)
    run = ProgramRun()
    recorder = Recorder(run, calls, resources)
    pulumi.runtime.set_mocks(
        recorder, project="coderig", stack=stack, preview=False, monitor=RecordingMonitor(recorder)
    )
    flat = {f"coderig:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    runtime_config.set_all_config(flat, [f"coderig:{k}" for k in config if k in SECRET_KEYS])

    if program is None:
        import stacks

        program = stacks.build

    exported: dict[str, Any] = {}

    def body() -> None:
        try:
            exported.update(program())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            run.error = exc

    try:
        _sync_await(run_pulumi_func(body))
        for key, value in exported.items():
            out = pulumi.Output.from_input(value)
            run.outputs[key] = _sync_await(out.future())
            if _sync_await(out.is_secret()):
                run.secret_outputs.add(key)
    finally:
        runtime_config.set_all_config({}, [])
        loop.close()
        asyncio.set_event_loop(None)
    return run


@pytest.fixture
def stack_file(tmp_path: Path) -> Callable[..., Path]:
    def make(config: dict[str, Any], name: str = "test") -> Path:
        return write_stack(tmp_path, config, name)

    return make


# --- a stand-in model server and a running front door, shared by the integration suites ----------
# A test module sets MODEL (the served name), KEYS ({developer: token}) and optionally STANDIN_DELAY
# (seconds between streamed tokens); these fixtures read them.


@pytest.fixture(scope="module")
def standin(request: pytest.FixtureRequest) -> Iterator[Any]:
    from frontdoor_fixtures import standin_server

    delay = getattr(request.module, "STANDIN_DELAY", 0.0)
    with standin_server(model=request.module.MODEL, delay=delay) as server:
        yield server


@pytest.fixture(scope="module")
def door(request: pytest.FixtureRequest, standin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from frontdoor_fixtures import running_frontdoor

    state = tmp_path_factory.mktemp("frontdoor")
    keys, model = request.module.KEYS, request.module.MODEL
    limits = ("--rate-limit-per-minute", "3000", "--rate-burst", "200")
    with running_frontdoor(standin.url, model, state, keys, *limits) as fd:
        yield fd


# --- sshd test hosts (tests/sshhost.py) ------------------------------------------------------------


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One sshd test host in a network namespace, with a stand-in `docker` (needs root)."""
    import os

    from sshhost import ssh_host as start

    with start(tmp_path_factory.mktemp("sshhost"), os.getpid() % 100000) as host:
        yield host


# --- a real Kubernetes control plane (tests/kube_cluster.py; binaries from .ci/kube-deps.sh) --------


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """etcd, kube-apiserver, controllers, scheduler and kwok on loopback with two 8-GPU nodes and one
    general node (kube_cluster.NODES); every process is stopped at the end of the session."""
    from kube_cluster import kube_cluster

    with kube_cluster(tmp_path_factory.mktemp("kube")) as cluster:
        yield cluster
