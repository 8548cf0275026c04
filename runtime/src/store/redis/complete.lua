-- Finishes running jobs with their results. ARGV: id, token, result, now per job.
-- Returns per job: 'ok', 'lost' or 'missing'.
local out = {}
for i = 1, #ARGV, 4 do
  local id, token, result, now = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = JOB .. id
  local f = redis.call('HMGET', key, 's', 'tk', 'a', 'cw', 'cs', 'at', 'tn')
  if not f[1] then
    out[#out + 1] = 'missing'
  elseif f[1] ~= 'running' or f[2] ~= token then
    out[#out + 1] = 'lost'
  else
    redis.call('HSET', key, 's', 'succeeded', 'fa', now, 'r', result,
      'at', closed(f[6], f[3], f[4], f[5], now, nil))
    redis.call('HDEL', key, 'cw', 'cs', 'le')
    -- unindex(id, 'running', f[7]) and index(id, 'succeeded'), their set writes gathered.
    zrem_later(STATE.running, id)
    zrem_later(LEASES, id)
    if f[7] and f[7] ~= '' and redis.call('HINCRBY', RUNNING, f[7], -1) <= 0 then
      redis.call('HDEL', RUNNING, f[7])
    end
    index_later(id, 'succeeded', nil, nil, nil, now)
    emit(id, 'succeeded', 'succeeded', f[3], now)
    out[#out + 1] = 'ok'
  end
end
flush_later()
return out
