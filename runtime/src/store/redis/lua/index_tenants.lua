-- Files the jobs of a queue written before tenants had their own indexes (`tenant_state` in
-- common.lua) under them: a slice of the keyspace per call, once per queue; a marker says it
-- is done. Scripts keep the indexes from then on, so a job seen here twice, or moved since,
-- is filed where it is. ARGV: SCAN cursor ('0' to start). Returns the next cursor ('0' when
-- done), how many jobs this slice filed, and 1 if it looked (0 if the queue was done already).
local cursor = ARGV[1]
local built = TENANT_STATE .. 'built'
if cursor == '0' and redis.call('EXISTS', built) == 1 then return { '0', 0, 0 } end
local pattern = string.gsub(JOB, '[%*%?%[%]\\]', '\\%0') .. '*'
local scanned = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
local filed = 0
for _, key in ipairs(scanned[2]) do
  local f = redis.call('HMGET', key, F_STATE, F_TENANT)
  if f[1] and f[2] and f[2] ~= '' then
    redis.call('ZADD', tenant_state(f[1], f[2]), '0', string.sub(key, #JOB + 1))
    filed = filed + 1
  end
end
if scanned[1] == '0' then redis.call('SET', built, '1') end
return { scanned[1], filed, 1 }
