"""A node as Pulumi resources: the command steps that turn a machine into a running, ready stack.

Thin: every command string and file comes from `coderig.targets.compose` (one RenderedNode per
machine); this module only wires them into `command.remote.Command` (an `ssh` host) or
`command.local.Command` (this workstation).

Steps, each a child named f"{name}-<step>", each depending on the one before:
  preflight  read-only checks, one line per problem               (re-runs when its command changes)
  install    Docker + compose + NVIDIA toolkit when missing       (ssh only: never apt on a laptop)
  volume     the cache directory, or a block device formatted only when blank, mounted by UUID
  bundle     the bundle unpacked from a base64 tar.gz on stdin   (secrets: logging off, outputs secret)
  image-check  with `coderig:model.image` only: the image's own vLLM parser reads the model command
             (coderig.targets.compose.image_check) before `up` stops the running model server
  up         `docker compose up -d`, replaced when the model half of the bundle changes;
             its delete is `docker compose down` (weights stay on the volume), so it is
             delete-before-replace: the old stack stops before the new one starts
  frontdoor  recreates only LiteLLM + gateway when their half changes (a new developer key does
             not restart the model server)
  ready      readiness wait streaming progress, within a budget sized from the weights; on the
             first host it also waits for every replica's ready step (`after`), so LiteLLM never
             balances onto a replica that is still loading
  restart-gate  several machines only: the next machine's `up` depends on it; replaced with this
             machine's model half, its delete waits until this machine's model is ready again, so model
             restarts roll one machine at a time while the first create stays parallel
             (coderig.targets.compose.rolling)

`machine`: the identity of a machine that can be replaced under the same address (an AWS instance id
and its volume attachment id). Every step's triggers include it, so a new instance behind the same
Elastic IP and host key is preflighted, installed, mounted, given the bundle and started again.
Empty for `ssh` and `local`: their triggers are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_random as random

from coderig.core import access, hostkeys
from coderig.core.files import FileSet
from coderig.core.secrets import LinkTls, NodeSecrets
from coderig.core.settings import SshHost, StackSettings
from coderig.targets.compose import commands, image_check, rolling
from coderig.targets.compose import spec as compose_spec
from coderig.targets.compose.rendered import RenderedNode
from components.frontdoor import (
    DeveloperKeys,
    DeveloperKeysArgs,
    GatewayTls,
    GatewayTlsArgs,
    MasterKey,
    MasterKeyArgs,
    ReplicaLinks,
    ReplicaLinksArgs,
)

BASH = ["/bin/bash", "-c"]


@dataclass(frozen=True)
class Connection:
    """How commands reach the node: `ssh` (pulumi-command remote) or `local`."""

    args: command.remote.ConnectionArgs | None = None  # None: this machine (`command.local`)
    user: str | None = None  # remote user; not root -> commands use `sudo -n`

    @property
    def remote(self) -> bool:
        """Commands run on another machine (over SSH, with `args`), not on this one."""
        return self.args is not None


def ssh_connection(host: SshHost, private_key: pulumi.Input[str], *, insecure_skip: bool, where: str) -> Connection:
    """A pinned connection. Raises (naming the config key) when the host key is missing and the
    stack has not knowingly set insecureSkipHostKeyCheck."""
    pinned = hostkeys.pinned_host_key(host.hostKey, host.address, host.port, insecure_skip=insecure_skip, where=where)
    if pinned is None:
        pulumi.log.warn(
            f"{where}: insecureSkipHostKeyCheck is true: connecting to {host.address} WITHOUT verifying its host key"
        )
    args = command.remote.ConnectionArgs(
        host=host.address,
        port=host.port,
        user=host.user,
        private_key=pulumi.Output.secret(private_key),
        host_key=pinned,
        dial_error_limit=20,
        per_dial_timeout=30,
    )
    return Connection(args, host.user)


def local_connection() -> Connection:
    return Connection()


def _cmd(
    conn: Connection,
    name: str,
    opts: pulumi.ResourceOptions,
    *,
    create: pulumi.Input[str],
    delete: pulumi.Input[str] | None = None,
    stdin: pulumi.Input[str] | None = None,
    triggers: Sequence[Any] | None = None,
    secret: bool = False,
) -> pulumi.CustomResource:
    """One step. `secret`: the step carries secrets (stdin), so nothing is logged and stdout/stderr
    (and stdin) are stored as secrets."""
    if secret:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["stdout", "stderr", "stdin"])
        )
    if conn.args is not None:
        return command.remote.Command(
            name,
            connection=conn.args,
            create=create,
            delete=delete,
            stdin=stdin,
            triggers=list(triggers) if triggers is not None else None,
            logging=command.remote.Logging.NONE if secret else command.remote.Logging.STDOUT_AND_STDERR,
            add_previous_output_in_env=False,
            opts=opts,
        )
    return command.local.Command(
        name,
        create=create,
        delete=delete,
        stdin=stdin,
        triggers=list(triggers) if triggers is not None else None,
        interpreter=BASH,
        logging=command.local.Logging.NONE if secret else command.local.Logging.STDOUT_AND_STDERR,
        add_previous_output_in_env=False,
        opts=opts,
    )


@dataclass(frozen=True)
class NodeCommands:
    """Every command string a node's steps run, computed once from its RenderedNode (pure)."""

    preflight: str
    install: str | None
    volume: str
    copy: str
    bundle_dir: str
    user: str | None
    up: str
    down: str
    frontdoor_reload: str | None
    wait: str
    wait_env: dict[str, str]  # the readiness wait's parameters (the restart-gate runs the shipped copy)
    wait_budget_s: int
    image_check: str | None = None  # coderig:model.image: the image's vLLM reads the model command first


def node_commands(
    settings: StackSettings,
    rendered: RenderedNode,
    *,
    bundle_dir: str,
    host: SshHost | None,
    user: str | None,
    install: bool,
) -> NodeCommands:
    spec = rendered.spec
    device = host.cacheDevice if host else None
    front = rendered.front_services
    return NodeCommands(
        preflight=commands.script_command("preflight.sh", commands.preflight_env(settings, spec, device), user=user),
        install=commands.install_command(spec, user) if install else None,
        volume=commands.volume_command(spec, device, user),
        copy=commands.copy_command(bundle_dir, user),
        bundle_dir=bundle_dir,
        user=user,
        up=commands.up_command(bundle_dir, user),
        down=commands.down_command(bundle_dir, user),
        frontdoor_reload=commands.frontdoor_reload_command(front, bundle_dir, user) if front else None,
        wait=commands.wait_command(rendered, bundle_dir, user),
        wait_env=commands.wait_env(rendered, bundle_dir),
        wait_budget_s=rendered.ready_budget_s,
        image_check=image_check.image_check_command(settings, rendered, user),
    )


@dataclass(frozen=True)
class Rolling:
    """This machine's place in the rolling model restart (coderig.targets.compose.rolling)."""

    after: NodeStack | None = None  # its model restarts only once that machine's is ready again
    gates_next: bool = False  # another machine's restart waits for this one's: it has a restart-gate


@dataclass(frozen=True)
class NodeStackArgs:
    settings: StackSettings
    node: RenderedNode  # this machine, rendered once (coderig.targets.compose.rendered.render_nodes)
    conn: Connection
    secrets: pulumi.Output[NodeSecrets]
    bundle_dir: str = compose_spec.REMOTE_BUNDLE_DIR
    host: SshHost | None = None
    # a machine that can be replaced under the same address (an AWS instance id, its volume attachment)
    machine: Sequence[pulumi.Input[str]] = ()
    after: Sequence[NodeStack] = ()  # other nodes whose ready step this node's ready step waits for
    # only the model server's secrets (model API key, HF token): known in a preview that adds a
    # developer, so the preview shows no model restart and no replica bundle change
    model_secrets: pulumi.Output[NodeSecrets] | None = None
    link: pulumi.Output[LinkTls] | None = None  # this machine's replica-link certificate (several machines)
    rolling: Rolling = field(default_factory=Rolling)  # rolling model restarts (several machines)


def _with_link(secrets: pulumi.Output[NodeSecrets], link: pulumi.Output[LinkTls] | None) -> pulumi.Output[NodeSecrets]:
    if link is None:
        return secrets
    return pulumi.Output.secret(pulumi.Output.all(secrets, link).apply(lambda v: replace(v[0], link=v[1])))


class NodeStack(pulumi.ComponentResource):
    """One machine's stack: preflight → install → volume → bundle → up → frontdoor → ready."""

    ready: pulumi.Output[str]
    bundle_hash: pulumi.Output[str]

    def __init__(self, name: str, args: NodeStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("coderig:node:NodeStack", name, None, opts)
        a, spec = args, args.node.spec
        cmds = node_commands(
            a.settings, a.node, bundle_dir=a.bundle_dir, host=a.host, user=a.conn.user, install=a.conn.remote
        )
        model_secrets = _with_link(a.model_secrets if a.model_secrets is not None else a.secrets, a.link)
        # a replica holds only the model server's secrets
        secrets = model_secrets if spec.is_replica else _with_link(a.secrets, a.link)
        files = secrets.apply(lambda s: a.node.files | compose_spec.node_secret_files(spec, s))
        model_files = model_secrets.apply(lambda s: compose_spec.model_secret_files(spec, s))
        after = a.rolling.after.restart_gate if a.rolling.after else None
        steps = build_steps(
            self,
            name,
            a.conn,
            cmds,
            a.node,
            files,
            machine=list(a.machine),
            after=[n.ready_step for n in a.after],
            model_files=model_files,
            restart_after=[after] if after else [],
            gate=a.rolling.gates_next and spec.runs_model,
        )
        self.ready_step: pulumi.Resource = steps.ready
        self.restart_gate: pulumi.Resource | None = steps.gate
        self.ready: pulumi.Output[str] = steps.ready.stdout  # type: ignore[attr-defined]
        self.bundle_hash = steps.bundle_hash
        self.register_outputs({"ready": self.ready, "bundle_hash": self.bundle_hash})


def replicas_first(
    runs_model: Sequence[bool], make: Callable[[int, list[NodeStack], Rolling], NodeStack]
) -> list[NodeStack]:
    """The machines of a stack (`runs_model[i]`: machine i runs a model server), first machine first,
    built replicas first: the first machine's ready step waits for every replica's, so "ready" means
    LiteLLM balances only onto replicas that serve; model restarts roll replicas first, the first machine
    last (coderig.targets.compose.rolling). `make(i, after, rolling)` builds machine i."""
    waits = rolling.restart_after(runs_model)
    gates = set(waits.values())
    built: dict[int, NodeStack] = {}

    def one(i: int, after: list[NodeStack]) -> NodeStack:
        prev = built.get(waits[i]) if i in waits else None
        built[i] = make(i, after, Rolling(after=prev, gates_next=i in gates))
        return built[i]

    replicas = [one(i, []) for i in range(1, len(runs_model))]
    return [one(0, replicas), *replicas]


@dataclass(frozen=True)
class Steps:
    ready: pulumi.Resource
    bundle_hash: pulumi.Output[str]
    gate: pulumi.Resource | None  # the restart-gate (Rolling.gates_next), else None


def build_steps(
    parent: pulumi.Resource,
    name: str,
    conn: Connection,
    cmds: NodeCommands,
    rendered: RenderedNode,
    files: pulumi.Output[FileSet],
    *,
    machine: Sequence[pulumi.Input[str]] = (),
    after: Sequence[pulumi.Resource] = (),
    model_files: pulumi.Output[FileSet] | None = None,
    restart_after: Sequence[pulumi.Resource] = (),
    gate: bool = False,
) -> Steps:
    """The steps. `machine` joins every step's triggers; `after` are other nodes' ready steps this
    node's ready step waits for; `model_files` (the model server's secret files alone) gives the model
    half's hash without waiting on the front door's secrets (default: from `files`); `restart_after`:
    another machine's restart-gate this `up` waits for; `gate`: build this machine's restart-gate."""

    def child(*deps: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, depends_on=list(deps), **extra)

    def triggers(*values: Any) -> list[Any] | None:
        return [*values, *machine] or None

    preflight = _cmd(conn, f"{name}-preflight", child(), create=cmds.preflight, triggers=triggers())
    last = preflight
    if cmds.install:
        last = _cmd(conn, f"{name}-install", child(preflight), create=cmds.install, triggers=triggers())
    volume = _cmd(conn, f"{name}-volume", child(last), create=cmds.volume, triggers=triggers())

    full_hash = pulumi.Output.secret(files.apply(compose_spec.bundle_hash))
    guard = pulumi.Output.secret(
        pulumi.Output.all(full_hash, *machine).apply(lambda v: commands.bundle_guard(v[0], [str(x) for x in v[1:]]))
    )
    archive = pulumi.Output.secret(
        pulumi.Output.all(files, guard).apply(
            lambda v: compose_spec.bundle_archive(commands.with_hash_file(v[0], v[1]))
        )
    )
    halves = pulumi.Output.secret(files.apply(lambda f: rendered.hashes(_secret_part(f))))
    model_part = model_files if model_files is not None else files.apply(_secret_part)
    model_hash = pulumi.Output.secret(model_part.apply(lambda f: rendered.hashes(_secret_part(f))["model"]))
    frontdoor_hash = halves.apply(lambda h: h["frontdoor"])

    # Not delete-before-replace: its delete is guarded by the bundle hash (and the machine), so
    # replacing the bundle (create new, then delete old) never removes the new secrets, and never
    # restarts the model.
    bundle = _cmd(
        conn,
        f"{name}-bundle",
        child(volume),
        create=cmds.copy,
        delete=guard.apply(lambda h: commands.remove_secrets_command(h, cmds.bundle_dir, cmds.user)),
        stdin=archive,
        triggers=triggers(full_hash),
        secret=True,
    )
    checked: list[pulumi.Resource] = []
    if cmds.image_check:
        checked.append(
            _cmd(conn, f"{name}-image-check", child(bundle), create=cmds.image_check, triggers=triggers(model_hash))
        )
    up = _cmd(
        conn,
        f"{name}-up",
        child(bundle, *checked, *restart_after, delete_before_replace=True),
        create=cmds.up,
        delete=cmds.down,
        triggers=triggers(model_hash),
    )
    waits_on: list[pulumi.Resource] = [up]
    budget = f"{cmds.wait_budget_s + 600}s"
    if cmds.frontdoor_reload:
        waits_on.append(
            _cmd(conn, f"{name}-frontdoor", child(up), create=cmds.frontdoor_reload, triggers=triggers(frontdoor_hash))
        )
    ready = _cmd(
        conn,
        f"{name}-ready",
        child(*waits_on, *after, custom_timeouts=pulumi.CustomTimeouts(create=budget)),
        create=cmds.wait,
        triggers=triggers(model_hash, frontdoor_hash),
    )
    restart_gate = None
    if gate:
        restart_gate = _cmd(
            conn,
            f"{name}-restart-gate",
            child(up, delete_before_replace=True, custom_timeouts=pulumi.CustomTimeouts(delete=budget)),
            create=rolling.GATE_CREATE,
            delete=rolling.gate_delete_command(
                rolling.model_files_digest(rendered.files), cmds.wait_env, cmds.bundle_dir, cmds.user
            ),
            triggers=triggers(model_hash),
        )
    return Steps(ready, full_hash, restart_gate)


def _secret_part(files: FileSet) -> FileSet:
    return {
        p: f for p, f in files.items() if p.startswith((f"{compose_spec.SECRETS_DIR}/", f"{compose_spec.TLS_DIR}/"))
    }


@dataclass(frozen=True)
class FrontDoorAccess:
    """The secrets every node of a stack shares, and what developers need from them."""

    secrets: pulumi.Output[NodeSecrets]
    developer_keys: pulumi.Output[dict[str, str]]
    ca_pem: pulumi.Output[str] | None
    model_secrets: pulumi.Output[NodeSecrets]  # the model server's alone (API key, HF token)
    links: Sequence[pulumi.Output[LinkTls]] = ()  # machine i's replica-link certificate; () for one machine

    def link(self, machine: int) -> pulumi.Output[LinkTls] | None:
        return self.links[machine] if self.links else None


def front_door_access(
    settings: StackSettings, names: Sequence[str], config_secrets: dict[str, pulumi.Output[Any]]
) -> FrontDoorAccess:
    """Developer keys, LiteLLM's master key, the model servers' API key and the gateway TLS
    (components.frontdoor), gathered into one secret NodeSecrets for the node bundles; with replicas,
    the certificates of the links to them."""
    keys = DeveloperKeys("developers", DeveloperKeysArgs(settings.developers))
    master = MasterKey("litellm", MasterKeyArgs())
    model_key = random.RandomPassword("model-api-key", length=access.KEY_LENGTH, special=False)
    tls = GatewayTls(
        "gateway-tls",
        GatewayTlsArgs(
            list(names),
            supplied_cert=config_secrets.get("tlsCertificate"),
            supplied_key=config_secrets.get("tlsPrivateKey"),
        ),
    )
    empty = pulumi.Output.from_input("")
    secrets = pulumi.Output.all(
        model_key.result,
        master.value,
        keys.tokens,
        config_secrets.get("hfToken", empty),
        tls.cert_pem,
        tls.key_pem,
        config_secrets.get("externalApiKey", empty),
    ).apply(
        lambda v: NodeSecrets(
            model_api_key=v[0],
            litellm_master_key=v[1],
            developer_keys=dict(v[2]),
            hf_token=str(v[3] or ""),
            tls_cert=v[4],
            tls_key=v[5],
            external_api_key=str(v[6] or ""),
        )
    )
    model_secrets = pulumi.Output.all(model_key.result, config_secrets.get("hfToken", empty)).apply(
        lambda v: NodeSecrets(model_api_key=v[0], hf_token=str(v[1] or ""))
    )
    replicas = settings.target.replica_addresses
    links = ReplicaLinks("replica-links", ReplicaLinksArgs(replicas)).tls if replicas else []
    return FrontDoorAccess(
        pulumi.Output.secret(secrets), keys.tokens, tls.ca_pem, pulumi.Output.secret(model_secrets), links
    )
