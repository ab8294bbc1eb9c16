-- Purge one GPU (expired, revoked leases; stale waiters) and list what is live.
-- ARGV: prefix, gpu, tombstone_ms
-- Reply: {now, capacity or -1, {lease fields as flat lists (with 'expiry')...}, {waiter ids...}}
local gpu, tomb = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local capacity = tonumber(redis.call('GET', gpu_key(gpu, 'capacity')) or '-1')
local holders, purged = purge(gpu, now, tomb)
local waiters, dropped = live_waiters(gpu, now)
if purged or dropped then wake_head(waiters, '') end
local leases = {}
for _, h in ipairs(holders) do
  local fields = redis.call('HGETALL', P .. 'lease:' .. h.id)
  fields[#fields + 1] = 'id'
  fields[#fields + 1] = h.id
  fields[#fields + 1] = 'expiry'
  fields[#fields + 1] = redis.call('ZSCORE', gpu_key(gpu, 'leases'), h.id)
  leases[#leases + 1] = fields
end
local queued = {}
for _, w in ipairs(waiters) do
  queued[#queued + 1] = {w.id, w.vram, w.prio}
end
return {now, capacity, leases, queued}
