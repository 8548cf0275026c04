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
  local f = redis.call('HMGET', key, 'a', 'tk', 'sa')
  local attempt = (tonumber(f[1]) or 0) + 1
  local fields = { 's', 'running', 'a', attempt, 'tk', int((tonumber(f[2]) or 0) + 1),
    'cw', worker, 'cs', now, 'le', expires }
  if not f[3] then fields[#fields + 1] = 'sa'; fields[#fields + 1] = now end
  redis.call('HSET', key, unpack(fields))
  index(id, 'running', nil, nil, expires, now)
  emit(id, 'started', 'running', attempt, now)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
