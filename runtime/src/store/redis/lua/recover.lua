-- Takes back running jobs whose lease lapsed, or that lost their lease entry: another attempt
-- if they have attempts left, else a dead letter. ARGV: now, limit, error JSON, the caller's
-- clock for leases ('' for Redis's: a caller whose clock runs ahead takes back no live lease).
-- Returns id, new state per recovered job.
local now, limit, err = ARGV[1], tonumber(ARGV[2]), ARGV[3]
-- A running job that lost its lease entry has one that lapsed long ago (`lost.lua` gives it).
local lapsed = redis.call('ZRANGEBYSCORE', LEASES, '-inf', int(lease_clock(ARGV[4])), 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(lapsed) do
  local key = JOB .. id
  local f = redis.call('HMGET', key, F_STATE, F_ATTEMPT, F_MAX_ATTEMPTS, F_PRIORITY, F_TENANT, F_LIMIT_KEY)
  if f[1] == 'running' then
    close_attempt(key, err, now)
    redis.call('HSET', key, F_ERROR, err)
    redis.call('HDEL', key, F_LEASE_EXPIRES)
    unindex(id, 'running', f[5], f[6])
    if tonumber(f[2]) >= tonumber(f[3]) then
      redis.call('HSET', key, F_STATE, 'dead', F_FINISHED_AT, now)
      index(id, 'dead', nil, nil, nil, now, f[5], f[6])
      emit_later(id, 'recovered', 'dead', f[2], now)
      emit_later(id, 'dead_lettered', 'dead', f[2], now, 'out of attempts after its lease expired')
      out[#out + 1] = id
      out[#out + 1] = 'dead'
    else
      redis.call('HSET', key, F_STATE, 'queued', F_RUN_AT, now)
      index(id, 'queued', f[4], now, nil, now, f[5], f[6])
      emit_later(id, 'recovered', 'queued', f[2], now)
      out[#out + 1] = id
      out[#out + 1] = 'queued'
    end
  else
    -- Not running any more (or gone): the entry is stale.
    redis.call('ZREM', LEASES, id)
  end
end
flush_later()
return out
