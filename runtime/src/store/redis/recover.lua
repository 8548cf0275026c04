-- Takes back running jobs whose lease lapsed, or that lost their lease entry: another attempt
-- if they have attempts left, else a dead letter. ARGV: now, limit, error JSON.
-- Returns id, new state per recovered job.
local now, limit, err = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local lapsed = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
-- A job that ran before LEASES was the running index, without a lease entry (a partial
-- restore, a hand edit), has no lease anyone could renew. (`lost.lua` finds such jobs of this
-- layout.)
if redis.call('EXISTS', STATE.running) == 1 then
  for _, id in ipairs(redis.call('ZRANGE', STATE.running, 0, -1)) do
    if not redis.call('ZSCORE', LEASES, id) then lapsed[#lapsed + 1] = id end
  end
end
local out = {}
for _, id in ipairs(lapsed) do
  local key = JOB .. id
  local f = redis.call('HMGET', key, 's', 'a', 'ma', 'pr', 'tn')
  if f[1] == 'running' then
    close_attempt(key, err, now)
    redis.call('HSET', key, 'e', err)
    redis.call('HDEL', key, 'le')
    unindex(id, 'running', f[5])
    if tonumber(f[2]) >= tonumber(f[3]) then
      redis.call('HSET', key, 's', 'dead', 'fa', now)
      index(id, 'dead', nil, nil, nil, now)
      emit_later(id, 'recovered', 'dead', f[2], now)
      emit_later(id, 'dead_lettered', 'dead', f[2], now, 'out of attempts after its lease expired')
      out[#out + 1] = id
      out[#out + 1] = 'dead'
    else
      redis.call('HSET', key, 's', 'queued', 'ra', now)
      index(id, 'queued', f[4], now, nil, now, f[5])
      emit_later(id, 'recovered', 'queued', f[2], now)
      out[#out + 1] = id
      out[#out + 1] = 'queued'
    end
  else
    -- Not running any more (or gone): the entry is stale.
    redis.call('ZREM', LEASES, id)
    if not f[1] then redis.call('ZREM', STATE.running, id) end
  end
end
flush_later()
return out
