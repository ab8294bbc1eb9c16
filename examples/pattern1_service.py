"""The seed document's Pattern 1, "Python ML Service (Recommended)", run once as a script.

Pattern 1 as written (only its imports changed to mlsup's) is the example feature runner's
service: ``examples/feature-runner/kv_ml_runner/service.py``, served by
``python -m kv_ml_runner``. This script uses that very class without HTTP: it starts the
service (preloading ``my-model`` under an 8000 MB lease), answers one question through
``infer`` and shuts down. Run it with a manifest that declares ``my-model``:
``MLSUP_CONFIG=examples/mlsup.toml python examples/pattern1_service.py``.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "feature-runner"))

from kv_ml_runner.service import MyMLService, app


async def main() -> None:
    print("app:", app.title)
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
