-- Cancels a waiting or running job. ARGV: id, cancellation error JSON, now.
-- Returns 'cancelled', 'cancelled_running', 'missing' or the finished state.
local id, err, now = ARGV[1], ARGV[2], ARGV[3]
local key = JOB .. id
local f = redis.call('HMGET', key, 's', 'a', 'tn')
local state = f[1]
if not state then return 'missing' end
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then return state end
close_attempt(key, err, now)
redis.call('HSET', key, 's', 'cancelled', 'fa', now)
redis.call('HDEL', key, 'le')
unindex(id, state, f[3])
index(id, 'cancelled', nil, nil, nil, now)
emit(id, 'cancelled', 'cancelled', f[2], now)
if state == 'running' then return 'cancelled_running' end
return 'cancelled'
