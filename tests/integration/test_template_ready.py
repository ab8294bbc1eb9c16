"""The worker template is ready (runtimes imported, the models' classes resolved) when
``start_template`` returns, so the supervisor never says it is ready before its template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlsup.testing import tiny_models

SCRIPT = r"""
import json, multiprocessing, sys
from multiprocessing import forkserver
from mlsup.supervisor.template import start_template

def report(queue):
    queue.put(sorted(m for m in sys.modules if m.startswith(("transformers.models.", "mlsup."))))

def compute(queue):
    # Two intra-op threads: a thread team created in the template before the fork would hang
    # this (GNU OpenMP), and the queue.get() below would time out.
    import numpy as np, torch
    torch.set_num_threads(2)
    a = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
    product = (torch.from_numpy(a) @ torch.from_numpy(a)).numpy()
    queue.put([torch.get_num_threads(), bool(np.allclose(product, a @ a, rtol=1e-3, atol=1e-3))])

if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    start_template(context, [("hf", sys.argv[1])])
    pid = forkserver._forkserver._forkserver_pid
    # Read at once, no waiting: torch's library is mapped only if the imports are done.
    with open(f"/proc/{pid}/maps") as maps:
        torch_mapped = "libtorch" in maps.read()
    queue = context.Queue()
    child = context.Process(target=report, args=(queue,))
    child.start()
    modules = queue.get(timeout=60)
    child.join()
    child = context.Process(target=compute, args=(queue,), daemon=True)  # not joined if hung
    child.start()
    threads, correct = queue.get(timeout=60)
    child.join()
    print(json.dumps({"torch_mapped": torch_mapped, "modules": modules, "threads": threads,
                      "correct": correct}))
"""


def test_the_template_is_ready_and_warm_when_start_template_returns(tmp_path: Path) -> None:
    script = tmp_path / "template_ready.py"  # a file: the forked child imports its function
    script.write_text(SCRIPT, encoding="utf-8")
    model = tiny_models.minilm_dir()
    out = subprocess.run(
        [sys.executable, str(script), str(model)],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch_mapped"], "start_template returned before the template's imports"
    # A worker forked from it finds MiniLM's model and tokenizer modules already imported.
    assert "transformers.models.bert.modeling_bert" in report["modules"]
    assert "transformers.models.bert.tokenization_bert" in report["modules"]
    # And the modules the worker itself needs to start, connect and load (its IPC client and
    # server, the model spec): imported in every worker otherwise, 30 ms of CPU each.
    for module in ("mlsup.ipc.client", "mlsup.ipc.server", "mlsup.kit.manifest"):
        assert module in report["modules"], f"{module} is imported after the fork"
    # A worker forked from it computes with more than one thread, and correctly.
    assert report["threads"] == 2 and report["correct"]
