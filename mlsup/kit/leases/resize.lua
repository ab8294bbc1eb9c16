-- Change a held lease's size. Shrinking always succeeds (and wakes the queue); growing only
-- if it fits now and nobody waits (a waiter is never overtaken).
-- ARGV: prefix, id, token, vram_mb, tombstone_ms
-- Replies: {'ok'} | {'too_big', capacity} | {'nofit', free_mb, waiters} | {'lost', reason}
--        | {'notheld'}
local id, token, vram, tomb = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local f, reply = check_holder(id, token, {'gpu', 'vram_mb'})
if reply then return reply end
local gpu, old = f[2], tonumber(f[3])
local capacity = tonumber(redis.call('GET', gpu_key(gpu, 'capacity')) or '0')
if vram > capacity then return {'too_big', capacity} end
local holders = purge(gpu, now, tomb)
local used, mine = 0, false
for _, h in ipairs(holders) do
  used = used + h.vram
  if h.id == id then mine = true end
end
if not mine then return {'lost', gone_reason(id, token) or 'expired'} end
local waiters = live_waiters(gpu, now)
if vram > old and (#waiters > 0 or used - old + vram > capacity) then
  return {'nofit', capacity - used, #waiters}
end
redis.call('HSET', P .. 'lease:' .. id, 'vram_mb', vram)
if vram < old then wake_head(waiters, '') end
return {'ok'}
