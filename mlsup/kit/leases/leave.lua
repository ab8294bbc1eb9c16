-- A waiter gives up (timeout, cancellation): leave the queue and wake the next head.
-- ARGV: prefix, gpu, id   Replies: 1 (was queued) | 0
local gpu, id = ARGV[2], ARGV[3]
local removed = redis.call('ZREM', gpu_key(gpu, 'queue'), id)
redis.call('DEL', P .. 'waiter:' .. id, P .. 'waiter:' .. id .. ':wake')
wake_first(gpu, now_ms(), id)
return removed
