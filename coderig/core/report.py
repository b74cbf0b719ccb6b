"""The plan as `coderig plan` prints it, `coderig render` writes it and the stack exports it: the
capacity plan (plan_text) followed by what it costs (cost). The target kind's idle mechanism comes from
the caller (coderig.targets.REGISTRY), which this layer cannot import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coderig.core import catalog, cost, plan_text, planner, restart

if TYPE_CHECKING:
    from coderig.core.settings import StackSettings


def text(settings: StackSettings, p: planner.Plan, stack: str, idle_mechanism: str | None) -> str:
    """The capacity plan, what it costs, and the always-on front-door machine's line when there is one."""
    door = settings.target.front_door_machine
    r = restart_estimate(settings)
    return "\n".join(
        [
            plan_text.format_plan(p, stack),
            *([restart.plan_line(r)] if r else []),
            *cost_estimate(settings, idle_mechanism).lines(),
            *([door.plan_line()] if door else []),
        ]
    )


def summary(settings: StackSettings, p: planner.Plan, stack: str, idle_mechanism: str | None) -> dict[str, object]:
    door = settings.target.front_door_machine
    r = restart_estimate(settings)
    return {
        "stack": stack,
        **p.summary(),
        **({"restart": r.summary()} if r else {}),
        "cost": cost_estimate(settings, idle_mechanism).summary(),
        **({"front_door": door.summary()} if door else {}),
    }


def cost_estimate(settings: StackSettings, idle_mechanism: str | None) -> cost.Estimate:
    """The estimate for a validated stack: its hosts, its target's list price, and what its kind does
    when idle (the registry's `TargetKind.idle_mechanism`: None when nothing stops the model)."""
    t = settings.target
    office = settings.idle.officeHours
    window = cost.Window(tuple(office.days), office.start, office.end, office.timezone) if office else None
    awake = cost.awake_hours(
        mechanism=idle_mechanism,
        policy_enabled=settings.idle.enabled,
        window=window,
        stop_after_minutes=settings.idle.stop_after_minutes,
    )
    inst = catalog.AWS_INSTANCES.get(t.instance_type) if t.instance_type else None
    return cost.estimate(
        settings.cost,
        hosts=t.replica_count,
        list_price_per_host=inst.usd_per_hour if inst else None,
        list_basis=f"AWS on-demand list price of {t.instance_type}, us-east-1",
        awake=awake,
        serves_model=t.serves_model,
    )


def restart_estimate(settings: StackSettings) -> restart.Restart | None:
    m, t = settings.model.spec, settings.target
    return restart.estimate(m.weight_bytes, m.engine, t.serves_model, t.weights_read)
