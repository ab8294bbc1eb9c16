-- Give a lease back; wake the head of its GPU's queue.
-- ARGV: prefix, id, token   Replies: {'ok'} | {'lost', reason} | {'notheld'}
local id, token = ARGV[2], ARGV[3]
local f, reply = check_holder(id, token, {'gpu'})
if reply then return reply end
forget(f[2], id, 'released', 0)
-- Nobody queued (the common case): one EXISTS instead of TIME and a ZRANGE of the queue.
if redis.call('EXISTS', gpu_key(f[2], 'queue')) == 1 then wake_first(f[2], now_ms(), '') end
return {'ok'}
