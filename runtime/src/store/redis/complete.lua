-- Finishes running jobs with their results. ARGV: now, then id, token, result per job.
-- Returns per job: 'ok', 'lost' or 'missing'.
local now = ARGV[1]
local out = {}
for i = 2, #ARGV, 3 do
  local id, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = JOB .. id
  local refused = check_lease(key, token)
  if refused then
    out[#out + 1] = refused
  else
    close_attempt(key, nil, now)
    redis.call('HSET', key, 's', 'succeeded', 'fa', now, 'r', result)
    redis.call('HDEL', key, 'le')
    unindex(id, 'running')
    index(id, 'succeeded', nil, nil, nil, now)
    emit(id, 'succeeded', 'succeeded', redis.call('HGET', key, 'a'), now)
    out[#out + 1] = 'ok'
  end
end
return out
