-- Compare-and-delete the lease of a dead owner whose users are dead too: only if it still
-- records that pid, start time and users (a lease re-registered meanwhile, a reused pid, or a
-- user attached since the caller looked, is left alone).
-- ARGV: prefix, id, pid, start, users, tombstone_ms   Replies: 1 (reaped) | 0
local id = ARGV[2]
local f = redis.call('HMGET', P .. 'lease:' .. id, 'pid', 'start', 'gpu', 'users')
if not f[1] or f[1] ~= ARGV[3] or f[2] ~= ARGV[4] or (f[4] or '') ~= ARGV[5] then return 0 end
forget(f[3], id, 'owner-died', tonumber(ARGV[6]))
wake_first(f[3], now_ms(), '')
return 1
