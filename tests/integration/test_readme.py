"""The README's Python examples run, as written, against a supervisor started as it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlsup.ipc.shm import sweep_orphans
from mlsup.testing.tiny_models import minilm_dir, smollm2_gguf

from .supervisor_helpers import RunningSupervisor

README = Path(__file__).parents[2] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture(scope="module")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> object:
    directory = tmp_path_factory.mktemp("readme")
    # As the README says: no [redis] table (an embedded Redis), a simulated GPU.
    config = f"""
[[devices]]
index = 0
memory_mb = 4000
simulated = true

[models.smollm2]
loader = "gguf"
path = "{smollm2_gguf()}"
options = {{ n_ctx = 512 }}

[models.minilm]
loader = "hf"
path = "{minilm_dir()}"
options = {{ task = "embedding" }}

[queues.summaries]
model = "smollm2"
op = "chat"
"""
    running = RunningSupervisor(directory, config).start()
    yield running
    running.stop()
    sweep_orphans()


def test_the_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(supervisor: RunningSupervisor, index: int) -> None:
    env = {**os.environ, "MLSUP_RUNTIME_DIR": str(supervisor.runtime)}
    env.pop("MLSUP_REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", EXAMPLES[index]], capture_output=True, text=True, env=env,
        timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip(), "the example printed nothing"
