-- Puts a running job back without counting the attempt. ARGV: id, token, now, and to snooze
-- it: until when (ms; '' to release it as it is, for a stopping worker) and the event's detail.
local id, token, now, snooze_until, detail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = JOB .. id
local refused = check_lease(key, token)
if refused then return refused end
redis.call('HDEL', key, F_WORKER, F_ATTEMPT_STARTED_AT, F_LEASE_EXPIRES)
local attempt = redis.call('HINCRBY', key, F_ATTEMPT, -1)
if attempt <= 0 then redis.call('HDEL', key, F_STARTED_AT) end
if snooze_until and snooze_until ~= '' then
  if tonumber(snooze_until) < tonumber(now) then snooze_until = now end
  redis.call('HSET', key, F_RUN_AT, snooze_until)
  redis.call('HINCRBY', key, F_SNOOZES, 1)
end
local f = redis.call('HMGET', key, F_PRIORITY, F_RUN_AT, F_TENANT, F_LIMIT_KEY)
local state = waiting_state(f[2], now, false)
redis.call('HSET', key, F_STATE, state)
unindex(id, 'running', f[3], f[4])
index(id, state, f[1], f[2], nil, now, f[3], f[4])
if snooze_until and snooze_until ~= '' then
  emit(id, 'snoozed', state, attempt, now, detail)
else
  emit(id, 'requeued', state, attempt, now, 'released by a stopping worker')
end
return 'ok'
