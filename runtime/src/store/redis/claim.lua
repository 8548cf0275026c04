-- Takes up to `limit` ready jobs for a worker under a new lease, after promoting due ones.
-- ARGV: now, worker (as a JSON string), limit, lease expiry.
-- Returns id, fields (HGETALL) for each claimed job.
local now, worker, limit, expires = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
promote(now, 1000)
if redis.call('EXISTS', PAUSED) == 1 then return {} end
local popped = redis.call('ZPOPMIN', READY, limit)
local out = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = JOB .. id
  redis.call('ZREM', STATE.queued, id)
  local attempt = redis.call('HINCRBY', key, 'a', 1)
  redis.call('HINCRBY', key, 'tk', 1)
  redis.call('HSET', key, 's', 'running', 'cw', worker, 'cs', now, 'le', expires)
  redis.call('HSETNX', key, 'sa', now)
  index(id, 'running', nil, nil, expires, now)
  emit(id, 'started', 'running', attempt, now)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
