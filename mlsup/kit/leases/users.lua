-- Record the processes that use a lease's VRAM (its worker), replacing what was recorded; a
-- lease whose owner died is reaped only once these are gone too.
-- ARGV: prefix, id, token, users ('pid:start,...'; '' for none)
-- Replies: {'ok'} | {'lost', reason} | {'notheld'}
local id, token, users = ARGV[2], ARGV[3], ARGV[4]
local f, reply = check_holder(id, token, {})
if reply then return reply end
if users == '' then
  redis.call('HDEL', P .. 'lease:' .. id, 'users')
else
  redis.call('HSET', P .. 'lease:' .. id, 'users', users)
end
return {'ok'}
