"""A job added by BullMQ for Node is served by the supervisor's queue runner, and Node reads its
return value back (``job.waitUntilFinished`` through ``QueueEvents``), as a TypeScript feature
would. BullMQ for Node is installed once with npm under ``~/.cache/mlsup-test-node``
(``$MLSUP_TEST_NODE_CACHE``); the test is skipped only where ``node`` or ``npm`` is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlsup.ipc.shm import sweep_orphans
from mlsup.queues.config import queue_prefix
from mlsup.testing.redis import TestRedis

from .queue_helpers import queue_toml
from .supervisor_helpers import RunningSupervisor, manifest

NODE_CACHE = Path(os.environ.get("MLSUP_TEST_NODE_CACHE", "~/.cache/mlsup-test-node"))
#: The Node packages, by major version (what a TypeScript producer of today installs).
PACKAGES = ("bullmq@6", "ioredis@5")

PRODUCER = r"""
const { Queue, QueueEvents } = require("bullmq");
const IORedis = require("ioredis");
const [url, prefix, name, jobs] = process.argv.slice(2);
const connect = () => url.startsWith("unix://")
  ? new IORedis({ path: url.slice(7).split("?")[0], maxRetriesPerRequest: null })
  : new IORedis(url, { maxRetriesPerRequest: null });
(async () => {
  const queue = new Queue(name, { connection: connect(), prefix });
  const events = new QueueEvents(name, { connection: connect(), prefix });
  await events.waitUntilReady();
  const added = [];
  for (const data of JSON.parse(jobs)) {
    added.push(await queue.add("from-node", data, { attempts: 3 }));
  }
  const results = [];
  for (const job of added) {
    try {
      results.push({ id: job.id, value: await job.waitUntilFinished(events, 120000) });
    } catch (err) {
      results.push({ id: job.id, failed: String(err.message) });
    }
  }
  console.log(JSON.stringify(results));
  await events.close();
  await queue.close();
  process.exit(0);
})().catch((err) => { console.error(err); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_modules() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to produce jobs with BullMQ for Node")
    cache = NODE_CACHE.expanduser()
    if not (cache / "node_modules" / "bullmq" / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text('{"private": true}\n')
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", *PACKAGES],
            cwd=cache, check=True, timeout=600, capture_output=True,
        )  # fmt: skip
    return cache / "node_modules"


def test_node_producer_gets_results_from_a_supervised_model(
    node_modules: Path, tmp_path: Path, redis_server: TestRedis, redis_prefix: str
) -> None:
    models = """
[models.probe]
loader = "probe"
path = "probe.txt"
vram_mb = 100
idle_timeout_s = 0
options = { dim = 4 }

"""
    config = manifest(redis_server.url, redis_prefix, models + queue_toml("ts", "probe", "run"))
    supervisor = RunningSupervisor(tmp_path, config).start()
    script = tmp_path / "producer.js"
    script.write_text(PRODUCER)
    jobs: list[dict[str, Any]] = [
        {"inputs": {"from": "node", "n": 7}},
        {"op": "embed", "input": ["a cat", "a kitten"]},
        {"inputs": 42},
    ]
    try:
        done = subprocess.run(
            ["node", str(script), redis_server.url, queue_prefix(redis_prefix), "ts",
             json.dumps(jobs)],
            env={**os.environ, "NODE_PATH": str(node_modules)},
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        echoed, vectors, refused = json.loads(done.stdout)
        with supervisor.client() as client:
            expected = client.model("probe").embed(["a cat", "a kitten"]).tolist()
    finally:
        supervisor.stop()
        sweep_orphans()
    assert echoed["value"] == {"from": "node", "n": 7}
    assert vectors["value"] == expected  # float32 -> JSON -> Node -> JSON: exact
    assert "invalid job data: inputs" in refused["failed"]
