"""Queues served by a real supervisor: its queue runner sidecar, real worker processes, the
test's Redis under its own prefix, jobs produced with mlsup.jobs (and BullMQ for Node in
test_queue_node.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from typing import Any

import numpy as np
import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlsup.bench.supervised import probe_model
from mlsup.cli import main as cli_main
from mlsup.errors import JobFailed, RequestTimeout
from mlsup.queues.metrics import register_queue_metrics
from mlsup.testing.redis import TestRedis
from mlsup.testing.tiny_models import minilm_dir, smollm2_gguf

from .queue_helpers import completed_at_least, producer, queue_events, queue_toml
from .supervisor_helpers import PREEMPTION_MODELS, manifest

PROBE = probe_model("probe", vram_mb=200, idle_timeout_s=0)


def exactly_once(events: Counter[tuple[str, str]], ids: list[str]) -> None:
    assert events == Counter({("completed", job_id): 1 for job_id in ids})


async def test_200_jobs_at_concurrency_2_complete_exactly_once(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = PROBE + queue_toml("volume", "probe", "run", concurrency=2)
    supervisors(manifest(redis_server.url, redis_prefix, config))
    async with producer(redis_server, redis_prefix) as jobs:
        ids = [await jobs.add("volume", {"inputs": {"i": i}}) for i in range(200)]
        results = await asyncio.gather(*(jobs.result("volume", j, timeout=120) for j in ids))
        counts = await jobs.counts("volume")
    assert results == [{"i": i} for i in range(200)]
    assert (counts["completed"], counts["failed"], counts["active"]) == (200, 0, 0)
    exactly_once(queue_events(redis_server, redis_prefix, "volume"), ids)


async def test_bad_data_fails_at_once_naming_the_field_and_the_queue_goes_on(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = PROBE + queue_toml("mixed", "probe", "run")
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, config))
    async with producer(redis_server, redis_prefix) as jobs:
        first = await jobs.add("mixed", {"inputs": {"n": 1}})
        wrong_type = await jobs.add("mixed", {"inputs": "everything"})
        unknown_field = await jobs.add("mixed", {"inputs": {}, "colour": "red"})
        last = await jobs.add("mixed", {"inputs": {"n": 2}})
        assert await jobs.result("mixed", first, timeout=60) == {"n": 1}
        assert await jobs.result("mixed", last, timeout=60) == {"n": 2}
        with pytest.raises(JobFailed, match=r"invalid job data: inputs: Expected 'object'"):
            await jobs.result("mixed", wrong_type, timeout=10)
        with pytest.raises(JobFailed) as caught:
            await jobs.result("mixed", unknown_field, timeout=10)
        assert "colour" in caught.value.context["reason"]
        queue, _ = await jobs._queue("mixed")
        for job_id in (wrong_type, unknown_field):
            job = await queue.getJob(job_id)
            assert job is not None and job.attemptsMade == 1  # not retried
    # mlsup jobs --json sees the same
    assert cli_main(["jobs", "--config", str(supervisor.config), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["queue"] == "mixed"
    assert (row["completed"], row["failed"], row["waiting"], row["active"]) == (2, 2, 0, 0)
    assert row["oldest_waiting_s"] is None
    # and so does /metrics' collector
    registry = CollectorRegistry()
    collector = register_queue_metrics(registry, supervisor.config)
    assert collector is not None
    try:
        text = generate_latest(registry).decode()
    finally:
        collector.close()
    assert 'mlsup_queue_jobs{queue="mixed",state="completed"} 2.0' in text
    assert 'mlsup_queue_jobs{queue="mixed",state="failed"} 2.0' in text
    assert 'mlsup_queue_oldest_waiting_seconds{queue="mixed"} 0.0' in text


async def test_a_worker_killed_mid_job_loses_no_job_and_runs_none_twice(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = PROBE + queue_toml("crashy", "probe", "run", concurrency=2)
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, config))
    async with producer(redis_server, redis_prefix) as jobs:
        ids = [await jobs.add("crashy", {"inputs": {"i": i, "sleep": 0.05}}) for i in range(30)]

        await completed_at_least(jobs, "crashy", 5)
        row = supervisor.row("probe")
        os.kill(row["pid"], signal.SIGKILL)
        results = await asyncio.gather(*(jobs.result("crashy", j, timeout=120) for j in ids))
    assert results == [{"i": i, "sleep": 0.05} for i in range(30)]
    exactly_once(queue_events(redis_server, redis_prefix, "crashy"), ids)
    after = supervisor.row("probe")
    assert after["restarts"] >= 1 and after["pid"] != row["pid"]


def runner_pid(supervisor: Any) -> int:
    """The pid of the supervisor's queue runner sidecar."""
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "mlsup.queues" in command and str(supervisor.runtime) in command:
            return int(process.pid)
    raise AssertionError("no queue runner is running")


async def test_a_killed_queue_runner_is_respawned_and_its_jobs_are_run_again(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    queue = queue_toml(
        "resilient", "probe", "run", concurrency=2, lock_duration_ms=1000, stalled_interval_ms=500
    )
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, PROBE + queue))
    async with producer(redis_server, redis_prefix) as jobs:
        ids = [await jobs.add("resilient", {"inputs": {"i": i, "sleep": 0.2}}) for i in range(16)]
        await completed_at_least(jobs, "resilient", 3)
        killed = runner_pid(supervisor)
        os.killpg(killed, signal.SIGKILL)  # mid-job: its locks expire, its jobs stall
        results = await asyncio.gather(*(jobs.result("resilient", j, timeout=120) for j in ids))
    assert results == [{"i": i, "sleep": 0.2} for i in range(16)]
    exactly_once(queue_events(redis_server, redis_prefix, "resilient"), ids)
    assert queue_events(redis_server, redis_prefix, "resilient", ("stalled",))  # recovered
    assert runner_pid(supervisor) != killed
    assert "sidecar queues" in supervisor.output()


async def test_jobs_wait_while_their_model_is_preempted_and_finish_after_reload(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = PREEMPTION_MODELS + "\n" + queue_toml("batch", "background", "run", model_wait_s=120)
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, config))
    count = 20
    async with producer(redis_server, redis_prefix) as jobs:
        data = [{"inputs": {"i": i, "sleep": 0.3}} for i in range(count)]
        ids = [await jobs.add("batch", item) for item in data]

        await completed_at_least(jobs, "batch", 2)
        with supervisor.client(timeout=60) as client:
            assert client.load("urgent", timeout=60)["state"] == "ready"
            # The queue asks for its model again at once: it waits for a lease, not served.
            assert supervisor.row("background")["state"] != "ready"
            assert "background: preempted by" in supervisor.output()
            held = await jobs.counts("batch")
            assert held["failed"] == 0 and held["completed"] < count
            client.unload("urgent")
        results = await asyncio.gather(*(jobs.result("batch", j, timeout=120) for j in ids))
        counts = await jobs.counts("batch")
    assert results == [item["inputs"] for item in data]
    assert (counts["completed"], counts["failed"]) == (count, 0)
    exactly_once(queue_events(redis_server, redis_prefix, "batch"), ids)
    assert supervisor.row("background")["state"] == "ready"


async def test_stop_leaves_waiting_jobs_in_redis_and_the_next_start_serves_them(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = PROBE + queue_toml("durable", "probe", "run")
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, config))
    async with producer(redis_server, redis_prefix) as jobs:
        ids = [await jobs.add("durable", {"inputs": {"i": i, "sleep": 0.2}}) for i in range(8)]

        await completed_at_least(jobs, "durable", 1)
        assert supervisor.stop() == 0
        stopped = await jobs.counts("durable")
        assert (stopped["failed"], stopped["active"], stopped["delayed"]) == (0, 0, 0)
        assert stopped["waiting"] >= 1 and stopped["completed"] + stopped["waiting"] == 8
        with pytest.raises(RequestTimeout):
            await jobs.result("durable", ids[-1], timeout=0.5)
        supervisor.start()
        results = await asyncio.gather(*(jobs.result("durable", j, timeout=120) for j in ids))
    assert results == [{"i": i, "sleep": 0.2} for i in range(8)]
    exactly_once(queue_events(redis_server, redis_prefix, "durable"), ids)


async def test_a_queue_model_loads_on_the_first_job_and_unloads_when_idle(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    models = PROBE.replace("idle_timeout_s = 0", "idle_timeout_s = 1")
    config = models + queue_toml("idle", "probe", "run")
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, config))
    assert supervisor.row("probe")["state"] == "unloaded"  # no job yet: not loaded
    async with producer(redis_server, redis_prefix) as jobs:
        assert await jobs.run("idle", {"inputs": {"n": 1}}, timeout=60) == {"n": 1}
        first = supervisor.row("probe")
        assert first["state"] == "ready"
        supervisor.wait_for("probe", lambda row: row["state"] == "unloaded")
        assert await jobs.run("idle", {"inputs": {"n": 2}}, timeout=60) == {"n": 2}
    assert supervisor.row("probe")["generation"] > first["generation"]


async def test_chat_and_embed_jobs_with_the_packaged_models(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    models = f"""
[models.smollm2]
loader = "gguf"
path = "{smollm2_gguf()}"
vram_mb = 400
options = {{ n_ctx = 512, seed = 1 }}

[models.minilm]
loader = "hf"
path = "{minilm_dir()}"
vram_mb = 400
options = {{ task = "embedding", device = "cpu" }}

"""
    config = (
        models + queue_toml("answers", "smollm2", "chat") + queue_toml("vectors", "minilm", "embed")
    )
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, config, memory_mb=4000))
    messages = [{"role": "user", "content": "What is the capital of France? One word."}]
    texts = ["a cat", "a kitten", "a rocket"]
    async with producer(redis_server, redis_prefix) as jobs:
        answer = await jobs.run(
            "answers", {"messages": messages, "max_tokens": 8, "temperature": 0}, timeout=120
        )
        vectors = await jobs.run("vectors", {"input": texts}, timeout=120)
    with supervisor.client(timeout=120) as client:
        direct_answer = client.model("smollm2").chat(messages, max_tokens=8, temperature=0)
        direct_vectors = client.model("minilm").embed(texts)
    assert isinstance(answer, str) and answer == direct_answer
    assert "Paris" in answer
    assert np.allclose(np.asarray(vectors, np.float32), direct_vectors, atol=1e-6)
    assert np.asarray(vectors).shape == (3, 384)


def test_a_queue_naming_an_unknown_model_stops_the_start(
    supervisors: Any, redis_server: TestRedis, redis_prefix: str
) -> None:
    config = PROBE + queue_toml("lost", "nope", "run")
    supervisor = supervisors(manifest(redis_server.url, redis_prefix, config), wait=False)
    assert supervisor.process is not None
    assert supervisor.process.wait(60) != 0
    assert "[queues.lost] model: no model 'nope'" in supervisor.output()
