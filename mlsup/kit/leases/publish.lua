-- Publish a GPU's capacity unless one is published already (first writer wins, so every
-- process agrees). A Redis that started less than a settle window ago may have lost leases
-- that are still held: then only re-registrations are admitted until the window ends.
-- ARGV: prefix, gpu, capacity_mb, redis_uptime_ms (a lower bound: store.uptime_lower_bound_ms),
--       settle_ms
-- Replies: {'published', capacity} | {'existing', capacity}
local gpu, capacity = ARGV[2], tonumber(ARGV[3])
local uptime, settle = tonumber(ARGV[4]), tonumber(ARGV[5])
local ck = gpu_key(gpu, 'capacity')
local existing = redis.call('GET', ck)
redis.call('SADD', P .. 'gpus', gpu)
if existing then return {'existing', tonumber(existing)} end
redis.call('SET', ck, capacity)
if settle > uptime then
  redis.call('SET', gpu_key(gpu, 'settle_until'), now_ms() - uptime + settle, 'PX', settle - uptime)
end
return {'published', capacity}
