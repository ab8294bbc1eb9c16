"""The seed document's Pattern 1, "Python ML Service (Recommended)", as written.

Only the import lines differ (mlsup's modules). Run it with a manifest that declares
``my-model`` (``MLSUP_CONFIG=examples/mlsup.toml``): ``python examples/pattern1_service.py``
starts the service, answers one question through ``infer`` and shuts down; the app itself is
served by ``examples/feature-runner`` (``python -m kv_ml_runner``).
"""

import asyncio

from mlsup.kit import GPUBoss, ManagedModelLoader, Priority
from mlsup.service import GPULifespanManager, create_app

# --- Pattern 1, as written -------------------------------------------------------------------


class MyMLService:
    def __init__(self):
        self.boss = GPUBoss()
        self.loader = ManagedModelLoader(boss=self.boss)
        self.model = None

    async def startup(self):
        await self.boss.connect()
        # Optionally preload model
        self.model = await self.loader.load(
            model_id="my-model",
            vram_mb=8000,
            priority=Priority.NORMAL
        )

    async def infer(self, input: str) -> str:
        # Model already loaded with lease
        return await self.model.chat([{"role": "user", "content": input}])

    async def shutdown(self):
        await self.loader.unload_all()
        await self.boss.close()

# FastAPI app with GPU lifespan management
app = create_app(
    title="My ML Service",
    lifespan=GPULifespanManager(MyMLService)
)

# --- end of Pattern 1 ------------------------------------------------------------------------


async def main() -> None:
    service = MyMLService()
    await service.startup()
    try:
        lease = service.model.lease
        print(f"lease: {lease.model_id} {lease.vram_mb} MB on GPU {lease.gpu}")
        print("answer:", await service.infer("Say hello in one word."))
    finally:
        await service.shutdown()
    print("leases held after shutdown:", len(service.boss.held))


if __name__ == "__main__":
    asyncio.run(main())
