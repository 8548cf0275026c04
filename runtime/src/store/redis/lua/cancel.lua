-- Cancels a waiting or running job. ARGV: id, cancellation error JSON, now.
-- Returns 'cancelled', 'cancelled_running', 'missing' or the finished state.
local id, err, now = ARGV[1], ARGV[2], ARGV[3]
local key = JOB .. id
local f = redis.call('HMGET', key, F_STATE, F_ATTEMPT, F_TENANT, F_LIMIT_KEY)
local state = f[1]
if not state then return 'missing' end
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then return state end
close_attempt(key, err, now)
redis.call('HSET', key, F_STATE, 'cancelled', F_FINISHED_AT, now)
redis.call('HDEL', key, F_LEASE_EXPIRES)
unindex(id, state, f[3], f[4])
index(id, 'cancelled', nil, nil, nil, now, f[3], f[4])
emit(id, 'cancelled', 'cancelled', f[2], now)
if state == 'running' then return 'cancelled_running' end
return 'cancelled'
