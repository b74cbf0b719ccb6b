"""Where vLLM and its kernels keep what they compile, autotune and JIT: on the weights volume, on
every target, so a restarted model server skips the long pole of a cold start (compiling and
autotuning, not reading the weights). Pure: one table, rendered by each target's model server.

Every cache the pinned vLLM (0.28.0, coderig.core.versions.VLLM_IMAGE) and the kernel libraries its
image ships write, with the file and line that decide where it goes when nothing is set:

- VLLM_CACHE_ROOT: vllm/envs.py (`~/.cache/vllm`, or $XDG_CACHE_HOME/vllm). Under it: the torch.compile
  cache (`torch_compile_cache/<hash>`, vllm/compilation/backends.py), where vLLM points Inductor and
  Triton while it compiles (`inductor_cache`, `triton_cache`: vllm/compilation/compiler_interface.py
  `initialize_cache`); FlashInfer's autotune results (`flashinfer_autotune_cache`,
  vllm/model_executor/warmup/flashinfer_autotune_cache.py); the startup plan (`startup_plan`, envs.py).
- TRITON_CACHE_DIR: Triton's own default is `~/.triton/cache`; Triton kernels built outside a
  torch.compile region (fused MoE, the attention backends' Triton kernels) land there, and vLLM turns
  on TRITON_CACHE_AUTOTUNING so the autotune results are written there too (vllm/env_override.py).
- TORCHINDUCTOR_CACHE_DIR: Inductor's default is `/tmp/torchinductor_<user>` (torch._inductor
  runtime/cache_dir_utils.py), used by anything compiled before vLLM redirects it.
- DG_JIT_CACHE_DIR: DeepGEMM's JIT cache; vLLM sets `$VLLM_CACHE_ROOT/deep_gemm` when unset
  (vllm/utils/deep_gemm.py); named here so it stays with the others whatever sets VLLM_CACHE_ROOT.
- FLASHINFER_WORKSPACE_BASE: FlashInfer 0.6.16.post3 (vLLM 0.28's requirements/cuda.txt) JIT-builds
  its ops under `$FLASHINFER_WORKSPACE_BASE/.cache/flashinfer/<version>/<archs>/cached_ops`, the base
  defaulting to $HOME (flashinfer/jit/env.py). Its cubins come from the image's flashinfer-cubin.
- CUDA_CACHE_PATH: the CUDA driver's PTX JIT cache (ComputeCache), default `~/.nv/ComputeCache`
  (CUDA C++ Programming Guide, "CUDA Environment Variables").

All of these are content-addressed (hash-named files written by rename), so replicas sharing one
volume share one cache.
"""

from __future__ import annotations

GiB = 1024**3

# variable -> directory below the weights volume's mount point
COMPILE_CACHES: dict[str, str] = {
    "VLLM_CACHE_ROOT": "vllm",
    "TRITON_CACHE_DIR": "kernels/triton",
    "TORCHINDUCTOR_CACHE_DIR": "kernels/torchinductor",
    "DG_JIT_CACHE_DIR": "vllm/deep_gemm",
    "FLASHINFER_WORKSPACE_BASE": "kernels/flashinfer",
    "CUDA_CACHE_PATH": "kernels/nv-compute-cache",
}


def compile_cache_env(volume_mount: str) -> dict[str, str]:
    """The model server's environment entries that put every compile/autotune/JIT cache on the
    weights volume mounted at `volume_mount` (the same table on every target)."""
    root = volume_mount.rstrip("/")
    return {var: f"{root}/{sub}" for var, sub in COMPILE_CACHES.items()}


# Room the caches take on the weights volume, counted in its size (coderig.core.budgets): torch.compile's
# artifacts are per rank (`torch_compile_cache/<hash>/rank_<i>_0`, vllm/compilation/backends.py), the
# kernel caches (Triton, DeepGEMM, FlashInfer, CUDA's ComputeCache) per kernel and shape, shared by the
# ranks. A heuristic, not measured here (no GPU): 2 GiB per GPU rank + 8 GiB shared. Unverified.
CACHE_BYTES_PER_GPU = 2 * GiB
CACHE_BYTES_SHARED = 8 * GiB


def cache_bytes(gpus: int) -> int:
    """What the compile/autotune/JIT caches of one replica on `gpus` GPUs take on the weights volume
    (replicas sharing a volume share these content-addressed files)."""
    return CACHE_BYTES_SHARED + CACHE_BYTES_PER_GPU * max(gpus, 1)
