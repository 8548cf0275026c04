-- Puts a dead letter back in its queue with a fresh set of attempts. ARGV: id, now.
-- Returns 'ok', 'missing' or the job's state.
local id, now = ARGV[1], ARGV[2]
local key = JOB .. id
local f = redis.call('HMGET', key, F_STATE, F_PRIORITY, F_TENANT, F_LIMIT_KEY)
if not f[1] then return 'missing' end
if f[1] ~= 'dead' then return f[1] end
redis.call('HSET', key, F_ATTEMPT, 0, F_STATE, 'queued', F_RUN_AT, now)
redis.call('HDEL', key, F_FINISHED_AT, F_SNOOZES)
unindex(id, 'dead', f[3], f[4])
index(id, 'queued', f[2], now, nil, now, f[3], f[4])
emit(id, 'requeued', 'queued', 0, now, 'retried from the dead letters')
return 'ok'
