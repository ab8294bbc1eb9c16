-- Extend a lease held by `token`; report a pending preemption request.
-- ARGV: prefix, id, token, ttl_ms, tombstone_ms
-- Replies: {'ok', now, expiry, preempt ('' or 'deadline|priority|requester'), epoch}
--        | {'lost', reason} | {'notheld'}
local id, token = ARGV[2], ARGV[3]
local ttl, tomb = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local f, reply = check_holder(id, token, {'gpu', 'preempt_deadline', 'epoch'})
if reply then return reply end
local gpu = f[2]
local expiry = redis.call('ZSCORE', gpu_key(gpu, 'leases'), id)
local reason = nil
if not expiry or tonumber(expiry) <= now then
  reason = 'expired'
elseif f[3] and tonumber(f[3]) <= now then
  reason = 'revoked'
end
if reason then
  forget(gpu, id, reason, tomb)
  wake_first(gpu, now, '')
  return {'lost', reason}
end
redis.call('ZADD', gpu_key(gpu, 'leases'), 'XX', now + ttl, id)
redis.call('SET', P .. 'boss:heartbeat:' .. id, '1', 'PX', ttl)
local preempt = ''
if f[3] then preempt = redis.call('GET', P .. 'boss:preempt:' .. id) or (f[3] .. '||') end
return {'ok', now, now + ttl, preempt, tonumber(f[4])}
