"""coderig:model.image: the model server (and the weights step) run the stack's image instead of the
pinned one, on compose nodes and Kubernetes; only references that cannot move are accepted."""

from __future__ import annotations

import pytest
import yaml
from conftest import ssh_config
from programs import kube_config

from coderig.core import planner, versions
from coderig.core.errors import UserError
from coderig.targets import parse_settings, render_stack

IMAGE = "registry.internal:5000/vllm/vllm-openai:v0.29.1-patched"


def images_in(config: dict) -> list[str]:
    s = parse_settings(config)
    out: list[str] = []
    for name, f in render_stack(s, "prod", planner.plan_stack(s)).items():
        if name.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all(f.content):
                out += _images(doc)
    return out


def _images(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


@pytest.mark.parametrize("config", [ssh_config, kube_config], ids=["ssh", "kubernetes"])
def test_the_stacks_image_replaces_the_pinned_vllm_everywhere(config) -> None:  # noqa: ANN001
    pinned = images_in(config())
    assert pinned.count(versions.VLLM_IMAGE) >= 2  # the model server and the weights step
    c = config()
    c["model"]["image"] = IMAGE
    overridden = images_in(c)
    assert versions.VLLM_IMAGE not in overridden
    assert overridden.count(IMAGE) == pinned.count(versions.VLLM_IMAGE)
    warned = [w for w in parse_settings(c).warnings if "coderig:model.image" in w]
    assert len(warned) == 1 and versions.VLLM_IMAGE in warned[0]


@pytest.mark.parametrize(
    "ref", ["vllm/vllm-openai", "vllm/vllm-openai:latest", "Vllm/Upper:v1", "vllm/vllm-openai:v1 --privileged"]
)
def test_a_moving_or_malformed_reference_is_refused_naming_the_key(ref: str) -> None:
    c = ssh_config()
    c["model"]["image"] = ref
    with pytest.raises(UserError) as err:
        parse_settings(c)
    assert any("coderig:model.image" in p and repr(ref) in p for p in err.value.problems)


def test_a_digest_pins_too() -> None:
    c = ssh_config()
    c["model"]["image"] = "vllm/vllm-openai@sha256:" + "ab" * 32
    assert parse_settings(c).model.image == c["model"]["image"]
