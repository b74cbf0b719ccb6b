"""Stack settings: the whole `coderig:` config namespace as pydantic models.

The Pulumi program reads these keys from Pulumi config; `coderig plan` / `coderig render` read the
same keys from a `Pulumi.<stack>.yaml` file. Both go through `parse_settings`, so validation and
its messages are identical. Every error names the key path (`coderig:target.gpu.count`), what was
given and what is allowed.

Secrets (`coderig:sshPrivateKey`, `coderig:hfToken`, …) are never needed to plan or render: in a
stack file they are `{secure: v1:…}` and are kept as the opaque `SECRET` marker.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from coderig.core import catalog, images, kv_tier, mtp, naming, sizing, templates, versions, vllm_flags
from coderig.core.cost import CostSettings
from coderig.core.developers import ENTRY_HINT, Roster, entry_names
from coderig.core.errors import UserError
from coderig.core.idle_settings import IdlePolicy, OfficeHours
from coderig.core.log_settings import LogSettings
from coderig.core.settings_base import KeyProblem as _KeyError
from coderig.core.settings_base import Loc, cidr
from coderig.core.settings_base import Model as _Model
from coderig.core.target_base import NODE_CACHE_PATH, GpuSpec, SshHost, TargetSettings

__all__ = [
    "COMMIT_RE",
    "DEVELOPER_RE",
    "GatewaySettings",
    "GpuSpec",
    "IdlePolicy",
    "Kinds",
    "ModelSettings",
    "NAMESPACE",
    "NODE_CACHE_PATH",
    "OfficeHours",
    "SECRET",
    "SECRET_KEYS",
    "Secret",
    "SshHost",
    "StackSettings",
    "UserError",
    "misspelt_namespaces",
    "parse_settings",
]

NAMESPACE = "coderig"


class Secret:
    """A config value that is present but encrypted in the stack file (`secure: v1:…`)."""

    def __repr__(self) -> str:
        return "[secret]"


SECRET = Secret()

# Keys whose values are secrets. They are top-level so `pulumi config set --secret` works on them.
SECRET_KEYS = ("sshPrivateKey", "hfToken", "tlsCertificate", "tlsPrivateKey", "externalApiKey")
# A revision that pins the weights: a full commit sha. Anything else (a branch such as main, a tag)
# can move, so a fresh volume may download different weights than the last one.
COMMIT_RE = re.compile(r"[0-9a-f]{40}")


class ModelSettings(_Model):
    preset: str
    servedName: str | None = None
    maxModelLen: int | None = None
    kvCacheDtype: Literal["fp8", "auto", "bf16"] = "fp8"
    gpuMemoryUtilization: float = Field(default=0.90, gt=0.1, le=0.98)
    maxOutputTokens: int | None = Field(default=None, ge=256)
    image: str | None = Field(default=None, description="the model server image instead of the pinned one")
    extraArgs: list[str] = Field(default_factory=list, description="extra model-server flags, appended")
    parallel: sizing.ParallelSettings | None = Field(default=None, description="override the planned layout")
    revision: str = Field(default="main", description="the weights' commit sha (pins them) or a branch (floats)")
    chatTemplate: templates.Name = Field(default=None, description="a coderig chat template or 'model' (its own)")
    mtp: bool | None = Field(default=None, description="MTP speculative decoding; default: the preset's (core/mtp.py)")
    kvOffload: kv_tier.KvOffloadSettings | None = Field(default=None, description="the host-memory KV tier")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        return v and images.check_ref(v)

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", v) or ".." in v:
            raise ValueError(f"got {v!r}; expected a commit sha (40 hex digits) or a branch or tag name")
        return v

    @property
    def revision_pinned(self) -> bool:
        return bool(COMMIT_RE.fullmatch(self.revision))

    @field_validator("extraArgs")
    @classmethod
    def _vllm_flags(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return vllm_flags.checked_extra_args(v, info.data)  # preset, image: validated before (declared before)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in catalog.PRESETS:
            raise ValueError(f"unknown preset {v!r}; allowed: {', '.join(catalog.PRESETS)}")
        return v

    @field_validator("servedName")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", v):
            raise ValueError(f"got {v!r}; use letters, digits, '.', '_', ':' or '-' (max 64)")
        return v

    @model_validator(mode="after")
    def _len_within_preset(self) -> ModelSettings:
        preset = catalog.PRESETS[self.preset]
        if self.maxModelLen is not None and not 1 <= self.maxModelLen <= preset.max_context:
            raise _KeyError(
                "maxModelLen",
                f"got {self.maxModelLen}; {self.preset} allows 1..{preset.max_context} tokens",
            )
        if self.maxOutputTokens is not None and self.maxOutputTokens >= self.max_model_len:
            raise _KeyError(
                "maxOutputTokens",
                f"got {self.maxOutputTokens}; it must be below maxModelLen ({self.max_model_len})",
            )
        return self

    @property
    def spec(self) -> catalog.Preset:
        return catalog.PRESETS[self.preset]

    @property
    def mtp_on(self) -> bool:
        return mtp.enabled(self.spec, self.mtp)

    @property
    def served_name(self) -> str:
        return self.servedName or self.spec.served_name

    @property
    def former_name(self) -> str | None:
        return naming.former_name(self.servedName, self.spec)

    @property
    def max_model_len(self) -> int:
        return self.maxModelLen or self.spec.default_context

    @property
    def max_output_tokens(self) -> int:
        """Output cap sent to clients: the preset's default, never more than a quarter of the context."""
        if self.maxOutputTokens is not None:
            return self.maxOutputTokens
        return min(self.spec.default_max_tokens, self.max_model_len // 4)


DEFAULT_GATEWAY_PORT = 8443


class GatewaySettings(_Model):
    port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=1, le=65535)
    rateLimitPerMinute: int = Field(default=600, ge=1)
    hostnames: list[str] = Field(default_factory=list, description="extra DNS names for the certificate")
    allowedCidrs: list[str] = Field(default_factory=list, description="client addresses the gateway serves")

    @field_validator("allowedCidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return [cidr(c) for c in v]

    @property
    def rate_per_second(self) -> int:
        """The gateway's per-developer sustained rate (nginx limit_req counts per second)."""
        return max(1, math.ceil(self.rateLimitPerMinute / 60))


DEVELOPER_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _developer_names(given: dict[str, Any]) -> list[tuple[Loc, str, Any]]:
    """Every invalid name and every name listed twice, each with its index."""
    out: list[tuple[Loc, str, Any]] = []
    seen: dict[str, int] = {}
    for loc, name in entry_names(given.get("developers")):
        i = int(loc[1])
        if not DEVELOPER_RE.fullmatch(name):
            why = f"got {name!r}: not a valid name; use lowercase letters, digits, '.', '_', '-' (max 63)"
            if DEVELOPER_RE.fullmatch(name.lower()):
                why += f", e.g. {name.lower()!r}"
            out.append((loc, why, name))
        elif name in seen:
            out.append(
                (
                    loc,
                    f"got {name!r}: listed twice (also developers[{seen[name]}]); each developer gets exactly one key",
                    name,
                )
            )
        else:
            seen[name] = i
    return out


def _budgets_counted(given: dict[str, Any], kinds: Kinds) -> list[tuple[Loc, str, Any]]:
    """A daily budget needs the gateway's usage record, which only some targets keep."""
    target, entries = given.get("target"), given.get("developers")
    kind = str(target.get("kind")) if isinstance(target, dict) else ""
    model = kinds.get(kind)
    if model is None or model.counts_usage or not isinstance(entries, list):
        return []
    counted = ", ".join(k for k, m in kinds.items() if m.counts_usage)
    return [
        (
            ("developers", i, "dailyTokens"),
            f"the {kind} target's gateway keeps no usage record to count a budget against "
            f"(budgets work on: {counted}); remove dailyTokens",
            entry["dailyTokens"],
        )
        for i, entry in enumerate(entries)
        if isinstance(entry, dict) and entry.get("dailyTokens") is not None
    ]


def _secrets_present(given: dict[str, Any], kinds: Kinds) -> list[tuple[Loc, str, Any]]:
    """Secrets that go together, and the SSH key an SSH target needs, whatever else is wrong."""
    out: list[tuple[Loc, str, Any]] = []
    if ("tlsCertificate" in given) != ("tlsPrivateKey" in given):
        out.append((("tlsCertificate",), "set both tlsCertificate and tlsPrivateKey (secrets), or neither", None))
    target = given.get("target")
    if not isinstance(target, dict) or "sshPrivateKey" in given:
        return out
    kind = str(target.get("kind"))
    model = kinds.get(kind)
    if model is None:
        return out
    fields = {k: v for k, v in target.items() if k in model.model_fields}
    if model.model_construct(**fields).over_ssh:  # what the kind declares, from the keys as given
        out.append(
            (
                ("sshPrivateKey",),
                f"the {kind} target connects over SSH and needs it: "
                "`pulumi config set --secret coderig:sshPrivateKey < KEY`",
                None,
            )
        )
    return out


# kind -> its `coderig:target` model: the registry (coderig.targets) hands these to validation
Kinds = Mapping[str, type[TargetSettings]]


class StackSettings(_Model):
    """The validated `coderig:` namespace. `target` is typed as what every kind shares; code that needs a
    kind's own keys narrows it with isinstance on the kind's model. A stack is validated by the model
    `validating_model(kinds)` derives from this one, whose target is the kinds' discriminated union."""

    target: TargetSettings
    model: ModelSettings
    developers: Roster = Field(default_factory=Roster, description=ENTRY_HINT)
    idle: IdlePolicy = Field(default_factory=IdlePolicy)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    environment: str | None = Field(default=None, description="tag value; defaults to the stack name")
    workload: sizing.WorkloadSettings | None = None
    cost: CostSettings | None = None
    logs: LogSettings = Field(default_factory=LogSettings)
    # secrets: only their presence matters here
    sshPrivateKey: Any = None
    hfToken: Any = None
    tlsCertificate: Any = None
    tlsPrivateKey: Any = None
    externalApiKey: Any = None

    kinds: ClassVar[Kinds] = {}  # set on the validating model: the kinds its target accepts

    @property
    def warnings(self) -> list[str]:
        """Accepted, but said once by `coderig plan` / `render` and `pulumi up` (one line each)."""
        out = list(self.target.warnings)
        if self.target.serves_model and not self.model.revision_pinned:
            out.append(
                f"coderig:model.revision: {self.model.revision!r} floats (a branch or tag): a new volume may get "
                f"other weights than the last; pin a commit sha of {self.model.spec.hf_repo}"
            )
        out += naming.warnings(self.model.preset, self.model.served_name, self.model.former_name)
        pinned = versions.LLAMACPP_IMAGE if self.model.spec.engine == "llama.cpp" else versions.VLLM_IMAGE
        out += images.override_warning(self.model.image, pinned)
        return out

    @property
    def kv_host(self) -> kv_tier.Host:
        """The model hosts as the host KV tier sizes them (coderig.core.kv_tier)."""
        t, m = self.target, self.model
        gpus, sleeping = t.gpus[1], self.sleeping_weights
        return kv_tier.Host(m.preset, m.spec.engine, t.serves_model, t.kind, gpus, t.instance_type, sleeping)

    @property
    def sleeping_weights(self) -> int:
        """Weights vLLM sleep mode (level 1) keeps in host RAM: the checkpoint as the preflight counts it
        (CODERIG_SLEEP_RAM_BYTES), when the idle action is sleep, the compose targets' default for vLLM
        (coderig.targets.compose.idle.action; tests/core/test_kv_tier.py checks they agree)."""
        t, idle, m = self.target, self.idle, self.model
        if not (idle.enabled and t.idle_actions and t.serves_model) or m.spec.engine != "vllm":
            return 0
        return mtp.effective(m.spec, m.mtp_on).weight_bytes if (idle.action or "sleep") == "sleep" else 0

    @model_validator(mode="after")
    def _cross_checks(self) -> StackSettings:
        t = self.target
        engine = self.model.spec.engine
        if t.serves_model and engine not in t.engines:
            # what this target cannot run: refused here, so `coderig plan` says so (not `pulumi up`)
            allowed = ", ".join(name for name, p in catalog.PRESETS.items() if p.engine in t.engines)
            raise _KeyError(
                "model.preset",
                f"{self.model.preset} runs on {engine}; the {t.kind} target runs {', '.join(t.engines)} presets "
                f"(allowed: {allowed}; use the local target for the CPU preset)",
            )
        if self.idle.action is not None:
            why = t.idle_action_problem(self.idle.action, engine)
            if why:
                raise _KeyError("idle.action", why)
        if self.gateway.port < t.min_gateway_port:
            raise _KeyError(
                "gateway.port",
                f"got {self.gateway.port}; on the {t.kind} target the gateway runs as non-root and listens "
                f"on a port >= {t.min_gateway_port} (allowed: {t.min_gateway_port}-65535; "
                "its Service still exposes 443)",
            )
        gpu = t.gpu_spec
        if t.serves_model and engine == "vllm" and t.gpus[0] is None:
            raise _KeyError(
                "target.gpu",
                f"preset {self.model.preset} runs on vLLM and needs GPUs: set target.gpu: {{model: H200, count: 8}}",
            )
        heads = self.model.spec.attention.attention_heads
        if gpu is not None and heads % gpu.count:
            raise _KeyError(
                "target.gpu.count",
                f"got {gpu.count}; tensor parallelism must divide {self.model.preset}'s {heads} attention heads",
            )
        return self


_TOP_KEYS = set(StackSettings.model_fields)


def validating_model(kinds: Kinds) -> type[StackSettings]:
    """StackSettings whose target is one of `kinds` (picked by its `kind` tag), with their checks."""
    return _validating_model(tuple(kinds.items()))


@functools.cache
def _validating_model(kinds: tuple[tuple[str, type[TargetSettings]], ...]) -> type[StackSettings]:
    models = dict(kinds)
    members: Any = tuple(models.values())
    target: Any = Annotated[Union[members], Field(discriminator="kind")]  # noqa: UP007 - built at run time
    model = create_model("StackSettings", __base__=StackSettings, __module__=__name__, target=(target, ...))
    model.kinds = models
    model.given_checks = (
        _developer_names,
        functools.partial(_budgets_counted, kinds=models),
        functools.partial(_secrets_present, kinds=models),
    )
    return model


def _is_branch(loc: tuple[Any, ...], i: int, kinds: Kinds) -> bool:
    """loc[i] is the discriminated union's branch (`target.<kind>`), not a key (a key may share its name)."""
    return i == 1 and loc[0] == "target" and loc[1] in kinds


def _key_path(loc: tuple[Any, ...], kinds: Kinds) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif not _is_branch(loc, i, kinds) and not str(item).startswith(("function-", "list[", "dict[")):
            parts.append(str(item))
    return f"{NAMESPACE}:" + ".".join(parts)


def _format_error(err: dict[str, Any], model: type[StackSettings]) -> str:
    loc = tuple(err["loc"])
    msg = str(err.get("msg", ""))
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyError):
        loc = (*loc, *ctx_err.key.split("."))
        msg = str(ctx_err).split(": ", 1)[1]
    else:
        msg = msg.removeprefix("Value error, ")
    kinds = model.kinds
    path = _key_path(loc, kinds)
    given = err.get("input")
    etype = err.get("type", "")  # the pydantic error type
    if etype == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(parent, model)
        return f"{path}: unknown key; allowed here: {', '.join(sorted(allowed))}"
    if etype == "union_tag_invalid":
        return f"{_key_path((*loc, 'kind'), kinds)}: got {err['ctx']['tag']!r}; allowed: {', '.join(kinds)}"
    if etype == "union_tag_not_found":
        return f"{_key_path((*loc, 'kind'), kinds)}: missing; allowed: {', '.join(kinds)}"
    if etype == "missing":
        return f"{path}: required but not set"
    if etype == "literal_error":
        return f"{path}: got {given!r}; {msg.lower()}"
    if etype.endswith(("_type", "_parsing")) or etype in ("greater_than_equal", "less_than_equal", "greater_than"):
        return f"{path}: got {given!r}; {msg.lower()}"
    return f"{path}: {msg}"


def _allowed_keys(loc: tuple[Any, ...], settings_model: type[StackSettings]) -> set[str]:
    model: Any = settings_model
    for i, item in enumerate(loc):
        if _is_branch(loc, i, settings_model.kinds):
            model = settings_model.kinds[item]
            continue
        if isinstance(item, int):
            continue
        field = model.model_fields.get(item) if hasattr(model, "model_fields") else None
        if field is None:
            return set()
        model = _inner_model(field.annotation)
    return set(model.model_fields) if hasattr(model, "model_fields") else set()


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if hasattr(annotation, "entry_model"):  # a list type validated from entries (developers.Roster)
        return annotation.entry_model
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def misspelt_namespaces(keys: Iterable[str]) -> list[str]:
    """Config keys whose namespace looks like a typo of `coderig:` (`coderg:target`): Pulumi and the
    stack file accept any namespace, so without this the key is silently someone else's."""
    out: list[str] = []
    for key in keys:
        ns, sep, name = str(key).partition(":")
        if sep and ns != NAMESPACE and difflib.get_close_matches(ns.lower(), [NAMESPACE], n=1, cutoff=0.7):
            out.append(f"{key}: unknown namespace; did you mean {NAMESPACE}:{name}?")
    return out


def parse_settings(raw: dict[str, Any], other_keys: Iterable[str] = (), *, kinds: Kinds) -> StackSettings:
    """Validate the `coderig:` namespace (keys without the prefix) for a target of one of `kinds` (the
    registry's models: coderig.targets.parse_settings passes them); `other_keys` are the config's keys
    in other namespaces (checked for a misspelt `coderig`). Raises UserError with every problem."""
    problems: list[str] = misspelt_namespaces(other_keys)
    unknown = sorted(set(raw) - _TOP_KEYS)
    for key in unknown:
        problems.append(f"{NAMESPACE}:{key}: unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    known = {k: v for k, v in raw.items() if k in _TOP_KEYS}
    model = validating_model(kinds)
    try:
        settings = model.model_validate(known)
    except ValidationError as exc:
        problems.extend(_format_error(dict(e), model) for e in exc.errors())
        raise UserError(problems) from None
    m = settings.model
    problems.extend(
        sizing.problems(
            preset=m.spec,
            serves_model=settings.target.serves_model,
            gpus=settings.target.gpus,
            max_model_len=m.max_model_len,
            parallel=m.parallel,
            workload=settings.workload,
            developers=len(settings.developers),
        )
    )
    problems.extend(settings.target.volume_problems(m.spec))
    problems += [why for why in [mtp.problem(m.spec, m.mtp)] if why] + kv_tier.problems(m.kvOffload, settings.kv_host)
    if problems:
        raise UserError(problems)
    return settings
