-- Puts a running job back without counting the attempt. ARGV: id, token, now.
local id, token, now = ARGV[1], ARGV[2], ARGV[3]
local key = JOB .. id
local refused = check_lease(key, token)
if refused then return refused end
redis.call('HDEL', key, F_WORKER, F_ATTEMPT_STARTED_AT, F_LEASE_EXPIRES)
local attempt = redis.call('HINCRBY', key, F_ATTEMPT, -1)
if attempt <= 0 then redis.call('HDEL', key, F_STARTED_AT) end
local f = redis.call('HMGET', key, F_PRIORITY, F_RUN_AT, F_TENANT)
local state = waiting_state(f[2], now, false)
redis.call('HSET', key, F_STATE, state)
unindex(id, 'running', f[3])
index(id, state, f[1], f[2], nil, now, f[3])
emit(id, 'requeued', state, attempt, now, 'released by a stopping worker')
return 'ok'
