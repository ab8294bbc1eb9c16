"""Every default of mlsup, in one place.

Each constant says what it bounds and why it has its value. Configuration (``mlsup.toml``) and
keyword arguments override them; code never repeats these numbers.
"""

from __future__ import annotations

# --- Runtime directory -------------------------------------------------------------------------

#: Name of mlsup's directory under ``$XDG_RUNTIME_DIR``; else ``/tmp/mlsup-$UID`` is used.
RUNTIME_DIR_NAME = "mlsup"
#: Mode of the runtime directory: sockets and published URLs are private to the user.
RUNTIME_DIR_MODE = 0o700

# --- Wire format -------------------------------------------------------------------------------

#: Version of the frame format; a peer speaking another version gets a ProtocolError.
PROTOCOL_VERSION = 1
#: Largest msgpack header accepted. Headers carry arguments and descriptors, never tensor bytes.
MAX_HEADER_BYTES = 1 << 20
#: Most buffer frames after the header (one per tensor travelling as a frame).
MAX_FRAMES = 1024
#: Most tensors one message may describe.
MAX_TENSORS = 1024
#: Largest single tensor accepted (bytes): 64 GiB, far above any model input, and below the point
#: where a hostile shape could make ``prod(shape)`` overflow into something plausible.
MAX_TENSOR_BYTES = 64 << 30
#: Most dimensions of one tensor.
MAX_TENSOR_NDIM = 32
#: Deepest nesting of arguments around a tensor (msgpack itself stops at 1024 levels).
MAX_ARG_DEPTH = 32

# --- Shared memory -----------------------------------------------------------------------------

#: Tensors of at least this many bytes travel through shared memory; smaller ones as frames.
#: Chosen by ``mlsup bench ipc`` ("threshold choice" rows): a frame wins at 4 KiB (174 vs
#: 215 us), shared memory from 16 KiB on (226 vs 251 us; 206 vs 326 us at 256 KiB).
SHM_THRESHOLD_BYTES = 16 << 10
#: Reply arrays of at most this many bytes travel inside the header (an inline extension), not
#: as a frame with a descriptor: a float32 embedding then costs no descriptor to build, check and
#: materialize (measured by ``mlsup bench proxy``'s small-embed row). Requests never inline.
INLINE_TENSOR_BYTES = 16 << 10
#: Smallest shared-memory segment created; blocks are rounded up to a power of two above it.
SHM_MIN_SEGMENT_BYTES = 1 << 20
#: Free segments kept for reuse by one pool (bytes). Beyond it, released segments are unlinked.
SHM_POOL_KEEP_BYTES = 1 << 30
#: Most bytes one pool lends at once; past it, tensors travel as frames (a copy, never a failure).
SHM_POOL_MAX_BYTES = 8 << 30
#: Attached foreign segments cached by one receiver (mapped once, reused across requests).
SHM_ATTACH_CACHE_SIZE = 64

# --- Transport ---------------------------------------------------------------------------------

#: Deadline of one request when the caller gives none (seconds). Model calls override it.
REQUEST_TIMEOUT_S = 30.0
#: How long close() waits to flush unsent messages (ms). 0: never block on a dead peer.
SOCKET_LINGER_MS = 0
#: How long closing a client may wait to deliver its last release message (ms).
CLOSE_LINGER_MS = 100
#: Caller identities a server remembers (their pids, for lending shared memory).
MAX_KNOWN_PEERS = 4096
#: Idle sockets kept per client for reuse by the next caller.
CLIENT_IDLE_SOCKETS = 16
#: How often a server checks whether the borrowers of its shm blocks are still alive (seconds).
BORROWER_CHECK_INTERVAL_S = 5.0

# --- Leases ------------------------------------------------------------------------------------

#: Lifetime of a lease without renewal (seconds). A dead holder frees its VRAM after this.
#: It is also the settle window after a Redis (re)start: until Redis has been up this long,
#: only re-registrations of existing leases are admitted (holders renew, and so re-register,
#: within LEASE_RENEW_INTERVAL_S), so a restart cannot over-commit a GPU.
LEASE_TTL_S = 10.0
#: Renewals per TTL: three, so two renewals may fail before a lease expires. A timing that gives
#: no renew interval renews at ``ttl_s / LEASE_RENEWALS_PER_TTL``.
LEASE_RENEWALS_PER_TTL = 3
#: Interval between renewals with the default TTL.
LEASE_RENEW_INTERVAL_S = LEASE_TTL_S / LEASE_RENEWALS_PER_TTL
#: How long acquire() waits for capacity when the caller gives no timeout (seconds).
LEASE_ACQUIRE_TIMEOUT_S = 30.0
#: Grace period a preempted holder gets to yield before its lease is revoked (seconds).
PREEMPT_GRACE_S = 10.0
#: A queued waiter not seen for this long is dropped from the queue (seconds).
WAITER_TTL_S = 5.0
#: Lower-priority holders considered when choosing whom to preempt (the cheapest subset is
#: searched exhaustively, 2**n subsets inside one Lua call: 12 keeps it near a millisecond).
PREEMPT_MAX_CANDIDATES = 12
#: How long the reason a lease was lost (expired, revoked, reaped) is kept (seconds), so that
#: its holder gets LeaseLost rather than LeaseNotHeld when it next renews.
LEASE_TOMBSTONE_S = 3600.0
#: VRAM kept out of every real GPU's capacity for the driver, context and fragmentation (MB).
GPU_RESERVE_MB = 512

#: Without GPUs or [[devices]], models lease this share of host memory as device 0.
CPU_BUDGET_FRACTION = 0.5

# --- Workers and supervisor --------------------------------------------------------------------

#: Unload a model after this long without requests (seconds).
IDLE_TIMEOUT_S = 300.0
#: A load that shows no progress for this long is killed (seconds).
LOAD_STALL_TIMEOUT_S = 300.0
#: Deadline of a control-plane call that does not wait for a model (status, heartbeats).
CONTROL_TIMEOUT_S = 10.0
#: Deadline of a model call through the proxy when none is given: it covers loading the model
#: (a lease wait plus a load), the call itself and one retry (seconds).
CALL_TIMEOUT_S = 300.0
#: How long ``load``/``ensure`` waits for a model to become ready when the caller gives no
#: deadline: a lease wait plus a load (seconds).
ENSURE_TIMEOUT_S = 600.0
#: A waiting caller wakes this often (seconds) to check its deadline and that its peer is
#: alive: a dead worker becomes WorkerCrashed within this, and deadlines hold to within it.
LIVENESS_SLICE_S = 0.025
#: How long a caller that saw its worker die waits for the supervisor to say how (seconds).
CRASH_REPORT_WAIT_S = 2.0
#: Interval of worker heartbeats to the supervisor (seconds).
HEARTBEAT_INTERVAL_S = 1.0
#: Time between SIGTERM and SIGKILL when stopping a worker (seconds).
TERMINATE_GRACE_S = 5.0
#: How long a restarted supervisor waits for its predecessor's orphan workers to end after
#: SIGKILL before it releases their leases (seconds); one still running keeps its lease.
ORPHAN_EXIT_WAIT_S = 5.0
#: Restart backoff (seconds): a first crash respawns at once; the second waits the initial
#: delay, each further one ``factor`` times longer, up to the cap.
RESTART_BACKOFF_INITIAL_S = 0.5
RESTART_BACKOFF_FACTOR = 2.0
RESTART_BACKOFF_MAX_S = 30.0
#: More than this many crashes within RESTART_WINDOW_S marks the model FAILED.
RESTART_MAX_CRASHES = 5
RESTART_WINDOW_S = 60.0

# --- Loaders -----------------------------------------------------------------------------------

#: Context length of a GGUF model when the manifest gives none (tokens). llama.cpp's own default
#: is 512, too short for chat; 2048 fits small models in little VRAM.
GGUF_N_CTX = 2048
#: Bytes per cached K or V value in llama.cpp's KV cache (f16 unless configured otherwise).
GGUF_KV_BYTES_PER_VALUE = 2
#: llama.cpp's micro-batch (tokens): its compute buffer holds logits and activations for these.
GGUF_UBATCH = 512
#: Fixed part of llama.cpp's compute buffers and CUDA context scratch, added to every estimate
#: (MB). Measured buffers of small models stay below it.
GGUF_COMPUTE_OVERHEAD_MB = 64
#: Margin the validated llama loader keeps free on the GPU besides its estimate (MB).
VALIDATED_LLAMA_MARGIN_MB = 256
#: Extra memory over the weights for activations of transformers and diffusers models, as a
#: fraction of the weights (their sizes come from the safetensors files).
TORCH_ACTIVATION_FACTOR = 0.2
#: Fixed overhead of a torch model on a CUDA device (context, cuBLAS workspace), MB.
TORCH_CUDA_OVERHEAD_MB = 300
#: New tokens generated when a call gives no ``max_tokens`` (HF causal LMs).
GENERATE_MAX_TOKENS = 128
#: Cache of the tiny test models (``mlsup.testing.tiny_models``) when ``MLSUP_TEST_CACHE`` is unset.
TINY_MODELS_CACHE = "~/.cache/mlsup/tiny-models"

# --- Process plumbing outside the supervisor core (kit/leases, ipc/server, the CLI) -------------

#: How long a lease wait pauses before asking an unreachable Redis again (seconds): it may be
#: restarting, and the wait's own deadline still bounds the whole.
LEASE_TRANSPORT_RETRY_S = 0.1
#: How often stopping a background task re-sends its cancellation (seconds): a cancellation that
#: lands inside a Redis call can be turned into an ordinary error by the client library.
TASK_CANCEL_RETRY_S = 0.1
#: Longest operation name a server registers (characters); the wire header carries it per call.
MAX_OPERATION_NAME = 128
#: How long ``Server.stop`` waits for the serving thread to finish its request (seconds).
SERVER_STOP_TIMEOUT_S = 5.0
#: How long ``mlsup start --detach`` waits for the supervisor to answer (seconds): it starts an
#: embedded Redis and the template process that imports the runtimes.
START_READY_TIMEOUT_S = 120.0
#: How long ``mlsup stop`` waits for the supervisor to exit (seconds): every worker drains first.
STOP_WAIT_TIMEOUT_S = 60.0
#: How often the command line refreshes what it waits on or shows live: the supervisor coming
#: up, ``mlsup load``'s progress, a followed log (seconds).
CLI_POLL_INTERVAL_S = 0.1
#: How often a loading worker reports how much of its model's files it has read (seconds):
#: what ``mlsup load``'s progress bar shows.
LOAD_PROGRESS_INTERVAL_S = 0.25
# --- Supervisor decisions (supervisor/decide.py, daemon.py, control.py) ------------------------

#: How much to raise a model's VRAM estimate after it ran out of memory: the next lease is this
#: many times the larger of the old estimate and the memory the worker last measured.
OOM_GROWTH = 1.5
#: A preempted worker's drain ends this long before the preemption deadline (seconds), so that
#: its lease is released before the requester's grace runs out, not just after.
PREEMPT_YIELD_MARGIN_S = 0.2
#: How often the supervisor checks idle timeouts, lost leases and stalled loads (seconds).
HOUSEKEEPING_INTERVAL_S = 1.0
#: How long ``stop`` waits before stopping the supervisor, so that its reply is sent (seconds).
STOP_REPLY_DELAY_S = 0.05
#: Shortest time between two heartbeats a worker sends early because it finished a request
#: (seconds): status rows count served requests promptly without a report per call under load.
HEARTBEAT_NUDGE_MIN_S = 0.05

# --- Reliability (relsup, issue 14) ------------------------------------------------------------

#: How long a FAILED model stays parked (seconds): until then a caller's implicit load (its
#: first call through the proxy) fails fast with ModelFailed instead of reviving a crash loop;
#: ``mlsup load MODEL`` retries at once. Counted from the moment it failed.
RESTART_FAILED_COOLDOWN_S = 300.0
#: A worker stops serving this long before its lease's expiry as the supervisor last renewed it
#: (seconds): the renewal was recorded after Redis set the expiry, so the true one is earlier.
WORKER_LEASE_MARGIN_S = 0.5
#: A ready worker is hung once it has sent no heartbeat for this many heartbeat intervals and
#: used no CPU meanwhile (a long inference that holds the GIL still computes): it is killed
#: and respawned through the restart policy.
HEARTBEAT_MISSES = 10
#: A call still running after this long is hung, heartbeats or not (seconds): twice the
#: longest default deadline a caller gives a call, so only a runaway call reaches it.
HUNG_CALL_S = 2 * CALL_TIMEOUT_S
#: Lease enforcement: a worker whose VRAM (NVML, per process) stays above its lease by more than
#: this margin (MB) for VRAM_OVER_FOR_S is treated as out of memory: killed, re-leased at the
#: peak it reached, respawned.
VRAM_OVER_MARGIN_MB = 256
VRAM_OVER_FOR_S = 5.0

# --- Service registry (services.yaml) ----------------------------------------------------------

#: The file each feature declares its services in, found anywhere under the services root.
SERVICES_FILE_NAME = "services.yaml"
#: Largest services.yaml read (bytes): a real one is a few hundred bytes; this bounds hostile ones.
SERVICES_FILE_MAX_BYTES = 1 << 20
#: Most YAML nodes one services.yaml may expand to, counting every use of an anchor: bounds an
#: alias bomb ("billion laughs") that a small file can hide, far above any real file.
SERVICES_FILE_MAX_NODES = 100_000
#: Deadline of one ``GET /health`` probe by ``mlsup services`` (seconds): a runner on this host
#: answers in milliseconds; anything slower is reported as down rather than stalling the listing.
SERVICE_HEALTH_TIMEOUT_S = 1.0
#: Host that service URLs name: runners listen on loopback (the seed's Pattern 4 uses localhost).
SERVICE_HOST = "127.0.0.1"
#: Dependencies every workstation provides besides the registry's own ``<feature>.<service>``s.
KNOWN_INFRASTRUCTURE = ("infrastructure.redis",)

# --- Managed models and feature runners (mlsup.kit.managed, mlsup.service) ----------------------

#: How long unloading a managed model waits for calls still running on it in other threads
#: before leaving the unload to them (seconds): the last call to finish unloads it, so weights
#: are never freed under a running call, and an unload or shutdown never hangs on a stuck one.
MANAGED_UNLOAD_WAIT_S = 30.0
#: Deadline of one request to a feature runner built with ``mlsup.service.create_app``, model
#: load on first use included (seconds); past it the runner answers 504.
SERVICE_REQUEST_TIMEOUT_S = 300.0
#: How long a request waits for the runner's startup (model preload) before a 503 (seconds).
SERVICE_STARTUP_WAIT_S = 60.0
#: ``Retry-After`` of a 503 answer (lease wait timed out, preempted, still loading), seconds.
SERVICE_RETRY_AFTER_S = 5
#: How often an idle-shutdown runner checks whether its idle time is up (seconds).
SERVICE_IDLE_CHECK_S = 0.5

# --- Proxy call core (mlsup.proxy_core) --------------------------------------------------------

#: How much earlier than the caller's deadline the supervisor is asked to give up a ``load``
#: (seconds; at most half the deadline): its typed answer ("still starting", a lease wait that
#: timed out) then arrives before the caller's deadline, which holds to within a liveness slice.
LOAD_REPLY_MARGIN_S = 0.25
#: Deadline of ``unload`` (seconds): a generous bound on a drain (TERMINATE_GRACE_S, then
#: SIGKILL of the group and the lease's release), so that only a hung supervisor exceeds it.
UNLOAD_TIMEOUT_S = 60.0
#: How often a caller that saw its worker die asks the supervisor how it ended (seconds).
CRASH_REPORT_POLL_S = 0.02
#: Shortest deadline a model call is sent with (seconds): a call made just as its deadline
#: runs out still gets one look for a reply already waiting.
MIN_CALL_TIMEOUT_S = 0.001
# --- Dashboard (mlsup.dashboard) ---------------------------------------------------------------

#: How often the dashboard asks the supervisor for status rows and leases (seconds). Browsers get
#: a snapshot at most this often, and only when it changed; one poll serves every open tab.
DASHBOARD_POLL_S = 0.5
#: Bound of one poll of the supervisor (seconds): a wedged supervisor shows as unavailable
#: instead of freezing the page.
DASHBOARD_POLL_TIMEOUT_S = 3.0
#: How far back the activity columns look (seconds): requests/s and latency over this window.
DASHBOARD_ACTIVITY_WINDOW_S = 300.0
#: Width of one bar of the activity sparkline (seconds); window / this = points per sparkline.
DASHBOARD_SPARK_STEP_S = 10.0
#: Lines of a worker log shown when the page asks for no number, and the most it may ask for.
DASHBOARD_LOG_LINES = 200
DASHBOARD_LOG_MAX_LINES = 2000
#: Most bytes read from the end of a worker log for one tail: a huge log costs no more than this.
DASHBOARD_LOG_MAX_BYTES = 256 << 10
#: A comment line sent on an idle event stream this often (seconds), so proxies keep it open.
DASHBOARD_KEEPALIVE_S = 15.0
#: How long the standalone dashboard waits for open event streams when it stops (whole seconds:
#: uvicorn takes an int). An ``EventSource`` never ends by itself; the browser reconnects.
DASHBOARD_SHUTDOWN_GRACE_S = 1
#: Address of ``python -m mlsup.dashboard`` when no ``--listen`` is given: this machine only.
DASHBOARD_LISTEN = "127.0.0.1:8011"


# --- Sidecars and the HTTP gateway -------------------------------------------------------------

#: Time between SIGTERM and SIGKILL when the supervisor stops a sidecar process (seconds).
SIDECAR_STOP_GRACE_S = 5.0
#: Interface the gateway binds when ``[http] listen`` / ``--http`` gives only a port: loopback,
#: so that nothing is exposed to the network unless an address is given explicitly.
GATEWAY_HOST = "127.0.0.1"
#: Requests one model may have in flight or waiting at the gateway; past it, 429.
GATEWAY_MAX_QUEUE = 64
#: ``Retry-After`` (seconds) of a 429 (queue full) or 503 (model preempted or crashed).
GATEWAY_RETRY_AFTER_S = 1
#: How long a stopping gateway lets responses in progress finish (seconds); below
#: SIDECAR_STOP_GRACE_S, so that it exits on its own before the supervisor's SIGKILL.
GATEWAY_SHUTDOWN_GRACE_S = 3.0
#: How often the gateway checks that the supervisor that started it still runs (seconds).
GATEWAY_PARENT_CHECK_S = 1.0
#: Largest audio upload accepted by /v1/audio/transcriptions (bytes): the OpenAI API's limit.
GATEWAY_MAX_UPLOAD_BYTES = 25 << 20

# --- Job queues (mlsup.queues, mlsup.jobs, mlsup.kit.queue) -------------------------------------

#: BullMQ's key prefix: keys are ``bull:<queue>:wait`` and so on, as a Node producer expects.
#: The ``[redis] prefix`` of mlsup.toml goes in front of it.
QUEUE_KEY_PREFIX = "bull"
#: Jobs of one queue in flight at once when ``[queues.<name>]`` gives no ``concurrency``.
QUEUE_CONCURRENCY = 1
#: Attempts of a job whose producer set none (BullMQ's own default is a single attempt): a job
#: whose worker died mid-call is then retried instead of failed.
QUEUE_ATTEMPTS = 3
#: Backoff between those attempts (ms, exponential: 1 s, 2 s, 4 s...).
QUEUE_BACKOFF_MS = 1000
#: How long a job waits, within one attempt, for its model to come back when the answer is
#: "not now" (being loaded, preempted, respawned after a crash, no lease yet) (seconds).
#: Past it the attempt fails and BullMQ's attempts and backoff take over.
QUEUE_MODEL_WAIT_S = 300.0
#: First pause between two tries of a "not now" call (seconds); doubles up to the cap.
QUEUE_RETRY_PAUSE_S = 0.1
QUEUE_RETRY_PAUSE_MAX_S = 2.0
#: A running job's lock in Redis (ms), renewed every half of it while the call runs. A queue
#: runner that dies loses its locks after this; its jobs then return to ``wait`` (BullMQ's
#: default).
QUEUE_LOCK_DURATION_MS = 30_000
#: How often a runner looks for jobs whose lock expired (ms; BullMQ's default).
QUEUE_STALLED_INTERVAL_MS = 30_000
#: How long ``mlsup stop`` lets running jobs finish before the queue runner is killed
#: (seconds); jobs not yet started stay waiting in Redis for the next start.
QUEUE_STOP_GRACE_S = 60.0
#: Deadline of ``mlsup.jobs`` waiting for a job's result when the caller gives none (seconds).
JOB_RESULT_TIMEOUT_S = 300.0
# --- Bounded inputs and client reliability (issue 14: relipc) -----------------------------------

#: Largest request header a worker accepts (bytes), unless ``[supervisor] max_message_bytes``
#: says otherwise: arguments and descriptors only (tensor bytes travel apart), so 1 MiB holds
#: thousands of texts; a larger header is refused with a ProtocolError before it is parsed.
MAX_MESSAGE_BYTES = MAX_HEADER_BYTES
#: How often a running supervisor unlinks shared-memory segments whose creating process died
#: (seconds): a client killed with SIGKILL never runs its finalizer, so this bounds how long
#: its segments stay in /dev/shm.
SHM_SWEEP_INTERVAL_S = 2.0

# --- kitfix: closing BullMQ workers ---------------------------------------------------------------

#: How often closing queue workers cancels an idle wait for jobs that began after the close
#: (a bullmq race that otherwise held the close for the whole stop grace) (seconds).
QUEUE_CLOSE_POLL_S = 0.05
