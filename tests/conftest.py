"""Shared test helpers: stack files, and a Pulumi mock harness that records every resource.

Pulumi's mock state is process-global: `run_program` gives each call a fresh event loop, resets
the runtime options and config, and returns what was registered and exported.
"""

from __future__ import annotations

import asyncio
import json
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.config as runtime_config
import pytest
import yaml
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


class Recorder(pulumi.runtime.Mocks):
    def __init__(self, run: ProgramRun, calls: CallHandler | None = None):
        self.run = run
        self.calls = calls

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.run.resources.append(Registered(args.typ, args.name, dict(args.inputs), args.provider))
        outputs = {**fake_outputs(args.typ, args.name), **dict(args.inputs)}
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        self.run.calls.append((args.token, dict(args.args)))
        if self.calls is not None:
            return self.calls(args.token, dict(args.args)), []
        return {}, []


def run_program(
    config: dict[str, Any],
    program: Callable[[], dict[str, Any]] | None = None,
    *,
    stack: str = "test",
    calls: CallHandler | None = None,
) -> ProgramRun:
    """Run `stacks.build()` (or `program`) under mocks with the given `coderig:` config.

    Values of the keys in settings.SECRET_KEYS are passed as Pulumi secrets, like `--secret`.
    """
    from coderig.settings import SECRET_KEYS

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.reset_options(project="coderig", stack=stack, preview=False)
    run = ProgramRun()
    pulumi.runtime.set_mocks(Recorder(run, calls), project="coderig", stack=stack, preview=False)
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
