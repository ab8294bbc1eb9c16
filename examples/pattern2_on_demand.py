"""The seed document's Pattern 2, "On-Demand Loading (Lower VRAM usage)", as written.

``infer_once`` takes one lease with ``async with boss.acquire(...)``; the managed load inside
it uses that lease (no second one), and ``model.unload()`` leaves releasing it to the block.
Run: ``MLSUP_CONFIG=examples/mlsup.toml python examples/pattern2_on_demand.py``.
"""

import asyncio

from mlsup.kit import GPUBoss, ManagedModelLoader


class OnDemandService:
    def __init__(self):
        self.boss = GPUBoss()
        self.loader = ManagedModelLoader(boss=self.boss)

    # --- Pattern 2, as written ---------------------------------------------------------------

    # Load only when needed, release immediately
    async def infer_once(self, input: str) -> str:
        async with self.boss.acquire(vram_mb=8000, model_id="temp") as lease:  # noqa: F841 - as written
            model = await self.loader.load("my-model")
            try:
                result = await model.chat([{"role": "user", "content": input}])
            finally:
                await model.unload()
        # Lease auto-released
        return result

    # --- end of Pattern 2 --------------------------------------------------------------------


async def main() -> None:
    service = OnDemandService()
    await service.boss.connect()
    try:
        print("answer:", await service.infer_once("Say hello in one word."))
        print("leases held after the call:", len(service.boss.held))
    finally:
        await service.loader.unload_all()
        await service.boss.close()


if __name__ == "__main__":
    asyncio.run(main())
