-- Records a failed attempt; the job retries at `retry_at` if it has attempts left, else it is
-- dead. ARGV: id, token, error JSON, error message, retry_at ('' for dead), retry detail, now.
local id, token, err, message, retry_at, retry_detail, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local key = JOB .. id
local refused = check_lease(key, token)
if refused then return refused end
close_attempt(key, err, now)
redis.call('HSET', key, F_ERROR, err)
redis.call('HDEL', key, F_LEASE_EXPIRES)
local f = redis.call('HMGET', key, F_ATTEMPT, F_MAX_ATTEMPTS, F_PRIORITY, F_TENANT, F_LIMIT_KEY)
unindex(id, 'running', f[4], f[5])
redis.call('ZADD', FAILURES, now, id .. ':' .. f[1])
if retry_at ~= '' and tonumber(f[1]) < tonumber(f[2]) then
  local state = waiting_state(retry_at, now, true)
  redis.call('HSET', key, F_STATE, state, F_RUN_AT, retry_at)
  index(id, state, f[3], retry_at, nil, now, f[4], f[5])
  emit(id, 'failed', state, f[1], now, message)
  emit(id, 'retrying', state, f[1], now, retry_detail)
else
  redis.call('HSET', key, F_STATE, 'dead', F_FINISHED_AT, now)
  index(id, 'dead', nil, nil, nil, now, f[4], f[5])
  emit(id, 'failed', 'dead', f[1], now, message)
  emit(id, 'dead_lettered', 'dead', f[1], now, message)
end
return 'ok'
