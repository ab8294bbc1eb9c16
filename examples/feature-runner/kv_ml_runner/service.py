"""The runner's service: Pattern 1 of the seed document as written, with mlsup's imports.

``MLSUP_CONFIG`` names the manifest that declares ``my-model``; the Redis comes from it, from
``MLSUP_REDIS_URL``, or from a running ``mlsup start``. ``KV_IDLE_SHUTDOWN_S`` (optional) stops
the runner after that many idle seconds, releasing its lease.
"""

import os

from mlsup.kit import GPUBoss, ManagedModelLoader, Priority
from mlsup.service import GPULifespanManager, create_app


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


_idle = os.environ.get("KV_IDLE_SHUTDOWN_S")

# FastAPI app with GPU lifespan management
app = create_app(
    title="My ML Service",
    lifespan=GPULifespanManager(MyMLService),
    idle_shutdown_s=float(_idle) if _idle else None,
)
