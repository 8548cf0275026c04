-- Extends leases. ARGV: lease ms, the caller's clock for leases ('' for Redis's), then id, token
-- per lease. Returns per lease: 1 extended, 2 cancelled, 0 lost.
local expires = int(lease_clock(ARGV[2]) + tonumber(ARGV[1]))
local out = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = JOB .. id
  local f = redis.call('HMGET', key, F_STATE, F_TOKEN)
  if f[1] == 'running' and f[2] == token then
    redis.call('HSET', key, F_LEASE_EXPIRES, expires)
    redis.call('ZADD', LEASES, expires, id)
    out[#out + 1] = 1
  elseif f[1] == 'cancelled' then
    out[#out + 1] = 2
  else
    out[#out + 1] = 0
  end
end
return out
