-- Give a lease back; wake the head of its GPU's queue.
-- ARGV: prefix, id, token   Replies: {'ok'} | {'lost', reason} | {'notheld'}
local id, token = ARGV[2], ARGV[3]
local f, reply = check_holder(id, token, {'gpu'})
if reply then return reply end
forget(f[2], id, 'released', 0)
wake_first(f[2], now_ms(), '')
return {'ok'}
