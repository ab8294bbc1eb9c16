-- Helpers shared by the lease scripts; scripts.py prepends the constants below and the
-- helpers a script calls to each of them.
-- Key names: see keys.py. Time always comes from Redis TIME, never from a client.
-- ARGV[1] of every script is the key prefix; per-lease keys are built from it (single server).

local P = ARGV[1]
-- Keep in step with policy.QUEUE_PRIORITY_STRIDE and Priority.CRITICAL.
local STRIDE = 1099511627776
local TOP_PRIORITY = 3
-- A wake token nobody consumes (its waiter died) disappears after this long (ms).
local WAKE_TTL_MS = 60000

-- Redis time in ms, as a number and as its decimal text (built from TIME's text: Redis formats
-- a Lua number argument with snprintf, which costs more than the rest of a call).
local function now_ms()
  local t = redis.call('TIME')
  local ms = string.sub(t[2], 1, -4)
  local text = t[1] .. string.rep('0', 3 - #ms) .. ms
  return tonumber(text), text
end

local function gpu_key(gpu, what)
  return P .. 'gpu:' .. gpu .. ':' .. what
end

local function earliest(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if b < a then return b end
  return a
end

-- Remove a lease and leave a tombstone (token|reason) so that its holder is told it *lost* it.
local function forget(gpu, id, reason, tomb_ms)
  local lk = P .. 'lease:' .. id
  -- A released lease leaves no tombstone: no need to read its token (the release fast path).
  local token = reason ~= 'released' and redis.call('HGET', lk, 'token')
  redis.call('ZREM', gpu_key(gpu, 'leases'), id)
  redis.call('DEL', lk, P .. 'boss:heartbeat:' .. id, P .. 'boss:preempt:' .. id)
  if token then
    redis.call('SET', lk .. ':gone', token .. '|' .. reason, 'PX', tomb_ms)
  end
end

-- Purge expired and revoked leases; return the live ones, whether anything changed, and the
-- earliest future expiry or preemption deadline (when waiting callers should look again).
local function purge(gpu, now, tomb_ms)
  local entries = redis.call('ZRANGE', gpu_key(gpu, 'leases'), 0, -1, 'WITHSCORES')
  local live, changed, next_event = {}, false, nil
  for i = 1, #entries, 2 do
    local id, expiry = entries[i], tonumber(entries[i + 1])
    local f = redis.call('HMGET', P .. 'lease:' .. id, 'vram_mb', 'priority', 'preempt_deadline')
    if expiry <= now or not f[1] then
      forget(gpu, id, 'expired', tomb_ms)
      changed = true
    elseif f[3] and tonumber(f[3]) <= now then
      forget(gpu, id, 'revoked', tomb_ms)
      changed = true
    else
      local deadline = f[3] and tonumber(f[3]) or nil
      live[#live + 1] = {id = id, vram = tonumber(f[1]), prio = tonumber(f[2]),
                         pending = deadline ~= nil}
      next_event = earliest(earliest(next_event, expiry), deadline)
    end
  end
  return live, changed, next_event
end

-- Drop waiters that stopped refreshing; return the live ones in queue order.
local function live_waiters(gpu, now)
  local qk = gpu_key(gpu, 'queue')
  local entries = redis.call('ZRANGE', qk, 0, -1, 'WITHSCORES')
  local live, changed = {}, false
  for i = 1, #entries, 2 do
    local id = entries[i]
    local f = redis.call('HMGET', P .. 'waiter:' .. id, 'vram_mb', 'priority', 'expires')
    if not f[3] or tonumber(f[3]) <= now then
      redis.call('ZREM', qk, id)
      redis.call('DEL', P .. 'waiter:' .. id, P .. 'waiter:' .. id .. ':wake')
      changed = true
    else
      live[#live + 1] = {id = id, score = tonumber(entries[i + 1]), vram = tonumber(f[1]),
                         prio = tonumber(f[2])}
    end
  end
  return live, changed
end

-- Wake the head of the queue (other than `except`): under head-of-line order nobody behind
-- it can be admitted before it, so waking it alone is enough; once admitted it wakes the next.
local function wake_head(waiters, except)
  for _, w in ipairs(waiters) do
    if w.id ~= except then
      local wk = P .. 'waiter:' .. w.id .. ':wake'
      redis.call('LPUSH', wk, '1')
      redis.call('LTRIM', wk, 0, 0)
      redis.call('PEXPIRE', wk, WAKE_TTL_MS)
      return
    end
  end
end

local function wake_first(gpu, now, except)
  local waiters = live_waiters(gpu, now)
  wake_head(waiters, except)
end

-- policy.choose_victims, step for step (same order, same costs, same tie-breaking).
local function choose_victims(holders, need, prio, max_candidates)
  local remaining = need
  local fresh = {}
  for _, h in ipairs(holders) do
    if h.prio < prio then
      if h.pending then remaining = remaining - h.vram else fresh[#fresh + 1] = h end
    end
  end
  if remaining <= 0 then return {} end
  table.sort(fresh, function(a, b)
    if a.prio ~= b.prio then return a.prio < b.prio end
    if a.vram ~= b.vram then return a.vram > b.vram end
    return a.id < b.id
  end)
  while #fresh > max_candidates do table.remove(fresh) end
  local available = 0
  for _, h in ipairs(fresh) do available = available + h.vram end
  if available < remaining then return nil end
  local best_mask, best_top, best_total, best_count = 0, nil, nil, nil
  for mask = 1, 2 ^ #fresh - 1 do
    local total, top, count = 0, 0, 0
    for i, h in ipairs(fresh) do
      if bit.band(mask, 2 ^ (i - 1)) ~= 0 then
        total = total + h.vram
        if h.prio > top then top = h.prio end
        count = count + 1
      end
    end
    if total >= remaining then
      local better = best_top == nil or top < best_top
        or (top == best_top and (total < best_total
          or (total == best_total and count < best_count)))
      if better then best_mask, best_top, best_total, best_count = mask, top, total, count end
    end
  end
  local victims = {}
  for i, h in ipairs(fresh) do
    if bit.band(best_mask, 2 ^ (i - 1)) ~= 0 then victims[#victims + 1] = h end
  end
  return victims
end

-- The reason a missing lease is gone, if `token` held it; nil if it never did.
local function gone_reason(id, token)
  local gone = redis.call('GET', P .. 'lease:' .. id .. ':gone')
  if not gone then return nil end
  local sep = string.find(gone, '|', 1, true)
  if sep and string.sub(gone, 1, sep - 1) == token then return string.sub(gone, sep + 1) end
  return nil
end

-- Token check shared by renew/resize/release: returns the lease's fields, or a reply to send.
local function check_holder(id, token, fields)
  local lk = P .. 'lease:' .. id
  local f = redis.call('HMGET', lk, 'token', unpack(fields))
  if not f[1] then
    local reason = gone_reason(id, token)
    if reason then return nil, {'lost', reason} end
    return nil, {'notheld'}
  end
  if f[1] ~= token then return nil, {'notheld'} end
  return f, nil
end
