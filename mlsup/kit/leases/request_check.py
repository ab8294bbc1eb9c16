"""The pure admissibility check of a lease request: what can never be granted is refused with
a typed error before anything is sent to Redis."""

from __future__ import annotations

from collections.abc import Mapping

from mlsup.errors import CapacityExceeded, DeviceError, InvalidArgument

__all__ = ["check_request"]


def check_request(
    capacities: Mapping[int, int], vram_mb: int, model_id: str, gpu: int | None
) -> None:
    """Refuse, before anything is sent to Redis, a lease request that can never be granted:
    a ``vram_mb`` that is not a positive integer, an unknown GPU, or more than the GPU (or
    the largest GPU, when none is named) holds."""
    if not isinstance(vram_mb, int) or isinstance(vram_mb, bool) or vram_mb <= 0:
        raise InvalidArgument(
            f"vram_mb must be a positive integer (MB), not {vram_mb!r}", model=model_id
        )
    if gpu is not None and gpu not in capacities:
        known = ", ".join(map(str, sorted(capacities))) or "none"
        raise DeviceError(
            f"unknown GPU {gpu} for model {model_id!r}; known GPUs: {known}",
            gpu=gpu,
            model=model_id,
        )
    sizes = [capacities[gpu]] if gpu is not None else list(capacities.values())
    if not sizes:
        raise DeviceError(
            "no GPU is known: configure [[devices]] or run where NVML sees a GPU",
            model=model_id,
        )
    if vram_mb > max(sizes):
        raise CapacityExceeded(
            f"{vram_mb} MB for model {model_id!r} exceeds the capacity of "
            f"{'GPU ' + str(gpu) if gpu is not None else 'every GPU'} "
            f"({max(sizes)} MB); lower the estimate or use a larger GPU",
            gpu=gpu,
            model=model_id,
            vram_mb=vram_mb,
        )
