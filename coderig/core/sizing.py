"""The sizing keys of the stack settings: `coderig:model.parallel` (the parallel layout override) and
`coderig:workload` (the peak the plan sizes for), and their checks against the rest of the stack.

Field checks (types, ranges, unknown keys) run in pydantic with the other settings; the checks that
need the target and the preset run in `problems`, which `settings.parse_settings` calls after the
stack validated, so every problem is reported at once, each naming its key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from coderig.core import catalog, layout, prefill

PARALLEL_KEY = "coderig:model.parallel"
WORKLOAD_KEY = "coderig:workload"


class ParallelSettings(BaseModel):
    """vLLM's parallel layout for one replica; tensor × data must equal the replica's GPUs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tensor: int | None = Field(default=None, ge=1, le=64, description="tensor-parallel size; default GPUs ÷ data")
    data: int = Field(default=1, ge=1, le=64, description="data-parallel attention ranks")
    decodeContext: int = Field(default=1, ge=1, le=64, description="decode context parallel size (MLA only)")
    expert: bool = Field(default=False, description="expert parallelism (MoE only)")

    def layout(self, gpus: int) -> layout.Layout:
        tensor = self.tensor if self.tensor is not None else max(1, gpus // self.data)
        return layout.Layout(tensor, self.data, self.decodeContext, self.expert)


class WorkloadSettings(BaseModel):
    """The peak the stack must carry: developers × peakActiveShare × sessionsPerDeveloper requests at
    contextTokens, prefixReuse of each turn's input cached.

    No published figure for the share of developers whose agents run a request at the same time was
    found, so peakActiveShare has no default: set it from your own gateway logs (requests in flight
    at the busiest hour ÷ developers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    developers: int | None = Field(default=None, ge=1, le=100_000, description="default: len(coderig:developers)")
    peakActiveShare: float = Field(gt=0, le=1, description="share of developers with a request in flight at peak")
    contextTokens: int | None = Field(default=None, ge=1, description="tokens per request at peak; default maxModelLen")
    # issue #23 (llm-d, real Claude Code traffic): sub-agents fan out to a median of 7 concurrent sessions
    # per developer (p90 51); 96 % of turns reuse >= 90 % of their prefix (coderig.core.prefill)
    sessionsPerDeveloper: float = Field(
        default=prefill.SESSIONS_PER_DEVELOPER, ge=1, le=1000, description="concurrent sessions per active developer"
    )
    prefixReuse: float = Field(
        default=prefill.PREFIX_REUSE, ge=0, lt=1, description="share of a turn's input served from the prefix cache"
    )


def problems(
    *,
    preset: catalog.Preset,
    serves_model: bool,
    gpus: tuple[str | None, int],
    max_model_len: int,
    parallel: ParallelSettings | None,
    workload: WorkloadSettings | None,
    developers: int,
) -> list[str]:
    """Checks of model.parallel and workload against the target and preset, every one at once."""
    out: list[str] = []
    par = parallel
    if par is not None:
        gpu_name, count = gpus
        if not serves_model or preset.engine != "vllm" or not count:
            out.append(
                f"{PARALLEL_KEY}: set, but this stack runs no vLLM on GPUs here ({preset.id} on "
                f"{preset.engine}, {count} GPUs per replica); allowed: unset"
            )
        else:
            lay = par.layout(count)
            if lay.gpus != count:
                out.append(
                    f"{PARALLEL_KEY}: tensor {lay.tensor} × data {lay.data} = {lay.gpus} GPUs, the target gives "
                    f"{count} per replica; allowed: tensor × data = {count}, e.g. {{tensor: {count}}} or "
                    f"{{data: {count}, expert: true}}"
                )
            gpu = catalog.GPUS[gpu_name] if gpu_name else None
            out += [f"{PARALLEL_KEY}.{key}: {why}" for key, why in layout.problems(preset, gpu, lay)]
    w = workload
    if w is not None:
        if w.developers is None and not developers:
            out.append(
                f"{WORKLOAD_KEY}.developers: required: coderig:developers is empty, so there is no count to default to"
            )
        if w.contextTokens is not None and w.contextTokens > max_model_len:
            out.append(
                f"{WORKLOAD_KEY}.contextTokens: got {w.contextTokens}; a request holds at most maxModelLen tokens "
                f"(allowed: 1..{max_model_len})"
            )
    return out
