"""The seed document's Pattern 3, "Multi-Model Service", as written.

Each model type is a manifest id with its own lease size; a model loads on first use and
stays loaded (one lease each) until shutdown. Run:
``MLSUP_CONFIG=examples/mlsup.toml python examples/pattern3_multi_model.py``.
"""

import asyncio

from mlsup.kit import GPUBoss, ManagedModelLoader

# --- Pattern 3, as written (plus the constructor and shutdown of Pattern 1) -------------------


# Service that can use different models
class MultiModelService:
    MODELS = {
        "fast": {"id": "ministral-3b", "vram": 4000},
        "reasoning": {"id": "ministral-14b", "vram": 12000},
        "legal": {"id": "saul-7b", "vram": 8000},
    }

    def __init__(self):
        self.boss = GPUBoss()
        self.loader = ManagedModelLoader(boss=self.boss)

    async def infer(self, input: str, model_type: str = "fast") -> str:
        config = self.MODELS[model_type]
        model = await self.loader.load(
            model_id=config["id"],
            vram_mb=config["vram"]
        )
        return await model.chat([{"role": "user", "content": input}])

    async def shutdown(self):
        await self.loader.unload_all()
        await self.boss.close()

# --- end of Pattern 3 ------------------------------------------------------------------------


async def main() -> None:
    service = MultiModelService()
    try:
        for model_type in ("fast", "legal"):
            answer = await service.infer("Say hello in one word.", model_type)
            print(f"{model_type}: {answer}")
        leases = sorted((lease.model_id, lease.vram_mb) for lease in service.boss.held)
        print("leases:", leases)
    finally:
        await service.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
