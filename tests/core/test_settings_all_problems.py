"""Every target validator reports all of its problems in one run (keys that do not go together
included), each naming its key: a user fixes a stack file once, not once per problem."""

from __future__ import annotations

from typing import Any

import pytest

from coderig.core.settings import UserError
from coderig.targets import parse_settings

MODEL = {"preset": "deepseek-v3.2"}


def problems(target: dict[str, Any]) -> list[str]:
    with pytest.raises(UserError) as exc:
        parse_settings({"target": target, "model": MODEL})
    return exc.value.problems


def keys(lines: list[str]) -> set[str]:
    return {line.split(":", 2)[1] for line in lines}


def test_aws_reports_every_combination_with_the_other_problems() -> None:
    lines = problems({
        "kind": "aws", "instanceType": "p5en.48xlarge", "region": "us-east-9", "vpcId": "vpc-0123456789abcdef0",
        "spot": True, "capacityReservationId": "cr-0123456789abcdef0", "count": 0,
    })  # fmt: skip
    assert keys(lines) >= {"target.region", "target.subnetId", "target.spot", "target.count"}, lines
    assert any("vpcId is set without subnetId" in line for line in lines)
    assert any("spot cannot use capacityReservationId" in line for line in lines)


def test_aws_subnet_without_vpc_and_a_capacity_block_without_reservation_come_together() -> None:
    lines = problems({
        "kind": "aws", "instanceType": "p5en.48xlarge", "subnetId": "subnet-0123", "count": 2, "capacityBlock": True,
    })  # fmt: skip
    assert keys(lines) == {"target.vpcId", "target.count", "target.capacityBlock"}, lines


def test_kubernetes_with_three_problems_reports_three() -> None:
    lines = problems({
        "kind": "kubernetes", "gpu": {"model": "H100", "count": 8}, "namespace": "Not_A_Namespace",
        "replicas": 2, "ingressClass": "nginx",
    })  # fmt: skip
    assert len(lines) == 3 and keys(lines) == {"target.namespace", "target.storageClass", "target.ingressClass"}


def test_external_ssh_front_door_without_host_is_reported_with_a_bad_endpoint() -> None:
    lines = problems({"kind": "external", "endpoint": "llm.internal/v1", "frontDoor": "ssh"})
    assert keys(lines) == {"target.endpoint", "target.host", "sshPrivateKey"}, lines


def test_kubernetes_names_that_are_not_dns_labels_come_together() -> None:
    gpu = {"model": "H200", "count": 8}
    lines = problems({"kind": "kubernetes", "gpu": gpu, "namespace": "Team_A", "weightsVolumeName": "w" * 64})
    assert lines == [
        "coderig:target.namespace: got 'Team_A'; a namespace is lowercase letters, digits and '-' (max 63)",
        f"coderig:target.weightsVolumeName: got {'w' * 64!r}; a PVC name is lowercase letters, digits and '-' (max 63)",
    ]
