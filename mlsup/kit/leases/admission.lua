-- Admit one request on one GPU, or queue it fairly and ask lower priorities to yield.
-- ARGV: prefix, gpu, id, token, vram_mb, priority, model_id, owner, pid, host, start,
--       ttl_ms, grace_ms, waiter_ttl_ms, tombstone_ms, max_candidates, mode ('new'|'readmit'),
--       users ('' or the processes that use the VRAM, 'pid:start,...')
-- Replies: {'nogpu'} | {'too_big', capacity} | {'granted', epoch, now, expiry}
--        | {'queued', blocked, retry_ms, victims, settling, id1, pid1, start1, users1, ...}
--          (the trailing quadruples: this host's holders, for pid reaping by the caller)
--        | {'nofit', free} (readmit only) | {'notheld'} (readmit of an id held by another token)
local gpu, id, token = ARGV[2], ARGV[3], ARGV[4]
local vram = tonumber(ARGV[5])
-- Text arguments stay text where Redis takes them (no number conversion either way).
local ttl, tomb, mode = tonumber(ARGV[12]), ARGV[15], ARGV[17]
local now, now_text = now_ms()

-- Both GPU values in one call (each redis.call costs more than the command it runs).
local gpu_values = redis.call('MGET', gpu_key(gpu, 'capacity'), gpu_key(gpu, 'settle_until'))
if not gpu_values[1] then return {'nogpu'} end
local capacity = tonumber(gpu_values[1])
if vram > capacity then return {'too_big', capacity} end

local holders, purged, next_event = purge(gpu, now, tomb)
local waiters, dropped = live_waiters(gpu, now)
local used = 0
for _, h in ipairs(holders) do used = used + h.vram end
local lk = P .. 'lease:' .. id
local qk = gpu_key(gpu, 'queue')

local function grant()
  local epoch = redis.call('INCR', gpu_key(gpu, 'epoch'))
  -- The arguments as given, not their numbers: Redis would format those back (slow).
  redis.call('HSET', lk, 'vram_mb', ARGV[5], 'priority', ARGV[6], 'model_id', ARGV[7],
    'owner', ARGV[8], 'pid', ARGV[9], 'host', ARGV[10], 'start', ARGV[11], 'created', now_text,
    'epoch', epoch, 'token', token, 'gpu', gpu)
  if ARGV[18] ~= '' then redis.call('HSET', lk, 'users', ARGV[18]) end
  redis.call('ZADD', gpu_key(gpu, 'leases'), now + ttl, id)
  redis.call('SET', P .. 'boss:heartbeat:' .. id, '1', 'PX', ARGV[12])
  -- Skip the queue cleanup on the fast path (nobody waits): it is most of the script's cost.
  local was_queued = #waiters > 0 and redis.call('ZREM', qk, id) == 1
  if was_queued then
    redis.call('DEL', P .. 'waiter:' .. id, P .. 'waiter:' .. id .. ':wake')
  end
  if was_queued or purged or dropped then wake_head(waiters, id) end
  return {'granted', epoch, now, now + ttl}
end

if mode == 'readmit' then
  -- A holder re-registers after Redis lost its lease (restart): no queue, no settle window.
  local held = redis.call('HGET', lk, 'token')
  if held == token then
    return {'granted', tonumber(redis.call('HGET', lk, 'epoch')), now,
            tonumber(redis.call('ZSCORE', gpu_key(gpu, 'leases'), id) or now)}
  end
  if held then return {'notheld'} end
  if used + vram > capacity then return {'nofit', capacity - used} end
  return grant()
end

local score = #waiters > 0 and redis.call('ZSCORE', qk, id)
if score then
  score = tonumber(score)
elseif #waiters == 0 then
  score = 0  -- nobody to be blocked by; the real score is drawn if we queue
else
  score = (TOP_PRIORITY - tonumber(ARGV[6])) * STRIDE
    + tonumber(redis.call('GET', gpu_key(gpu, 'seq')) or '0') + 1
end
local blocked = false
for _, w in ipairs(waiters) do
  if w.id ~= id and w.score < score then blocked = true end
end
local settle_until = gpu_values[2] and tonumber(gpu_values[2])
local settling = settle_until and now < settle_until

if not blocked and not settling and used + vram <= capacity then return grant() end
local prio = tonumber(ARGV[6])

-- Queue (or stay queued) and refresh our liveness as a waiter.
if redis.call('ZSCORE', qk, id) == false then
  local seq = redis.call('INCR', gpu_key(gpu, 'seq'))
  redis.call('ZADD', qk, (TOP_PRIORITY - prio) * STRIDE + seq, id)
end
local waiter_ttl = tonumber(ARGV[14])
redis.call('HSET', P .. 'waiter:' .. id, 'vram_mb', ARGV[5], 'priority', ARGV[6],
  'expires', now + waiter_ttl)
redis.call('PEXPIRE', P .. 'waiter:' .. id, waiter_ttl * 2)

local victims = {}
if settling then
  next_event = earliest(next_event, settle_until)
elseif not blocked then
  victims = choose_victims(holders, used + vram - capacity, prio, tonumber(ARGV[16])) or {}
  local grace = tonumber(ARGV[13])
  for _, v in ipairs(victims) do
    local deadline = now + grace
    redis.call('HSET', P .. 'lease:' .. v.id, 'preempt_deadline', deadline)
    redis.call('SET', P .. 'boss:preempt:' .. v.id, deadline .. '|' .. prio .. '|' .. id,
      'PX', grace + ttl)
    -- Push it to the holder's process now; renewal reports it too, should the push be lost.
    local owner = redis.call('HGET', P .. 'lease:' .. v.id, 'owner')
    if owner then
      redis.call('PUBLISH', P .. 'boss:push:' .. owner,
        v.id .. '|' .. now .. '|' .. deadline .. '|' .. prio .. '|' .. id)
    end
    next_event = earliest(next_event, deadline)
  end
end
if purged or dropped then wake_head(waiters, id) end

local retry = -1
if next_event then retry = next_event - now end
local reply = {'queued', blocked and 1 or 0, retry, #victims, settling and 1 or 0}
for _, h in ipairs(holders) do
  local f = redis.call('HMGET', P .. 'lease:' .. h.id, 'host', 'pid', 'start', 'users')
  if f[1] == ARGV[10] then
    reply[#reply + 1] = h.id
    reply[#reply + 1] = f[2]
    reply[#reply + 1] = f[3]
    reply[#reply + 1] = f[4] or ''
  end
end
return reply
