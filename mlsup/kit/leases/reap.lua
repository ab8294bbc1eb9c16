-- Compare-and-delete the lease of a dead owner: only if it still records that pid and start
-- time (a lease re-registered meanwhile, or a reused pid, is left alone).
-- ARGV: prefix, id, pid, start, tombstone_ms   Replies: 1 (reaped) | 0
local id = ARGV[2]
local f = redis.call('HMGET', P .. 'lease:' .. id, 'pid', 'start', 'gpu')
if not f[1] or f[1] ~= ARGV[3] or f[2] ~= ARGV[4] then return 0 end
forget(f[3], id, 'owner-died', tonumber(ARGV[5]))
wake_first(f[3], now_ms(), '')
return 1
