-- Looks through this queue's job records for running jobs that lost their lease entry (a
-- partial restore, a hand edit: these scripts keep LEASES and RUNNING_COUNT together) and gives
-- each an expired lease, so the next recovery takes them back. A slice of the keyspace per call.
-- ARGV: SCAN cursor ('0' to start: then nothing is looked at unless RUNNING_COUNT and LEASES
-- disagree). Returns the next cursor ('0' when done, RUNNING_COUNT and the running counts per
-- tenant and key then set right), how many
-- jobs this slice found, and 1 if it looked (0 if the two agreed).
local cursor = ARGV[1]
if cursor == '0' then
  local count = tonumber(redis.call('GET', RUNNING_COUNT)) or 0
  if count == redis.call('ZCOUNT', LEASES, '-inf', '(+inf') then
    -- A keeper left behind (the count deleted by hand) goes with the last running job.
    if count == 0 then redis.call('ZREM', LEASES, LEASE_KEEPER) end
    return { '0', 0, 0 }
  end
end
local pattern = string.gsub(JOB, '[%*%?%[%]\\]', '\\%0') .. '*'
local scanned = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
local found = 0
for _, key in ipairs(scanned[2]) do
  local id = string.sub(key, #JOB + 1)
  if redis.call('HGET', key, F_STATE) == 'running' and not redis.call('ZSCORE', LEASES, id) then
    redis.call('ZADD', LEASES, 0, id)
    found = found + 1
  end
end
if scanned[1] == '0' then
  -- The running counts per tenant and key, rebuilt from the running jobs themselves: a job
  -- whose record went away by hand took its count with it, not back.
  redis.call('DEL', RUNNING)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(+inf')) do
    local f = redis.call('HMGET', JOB .. id, F_TENANT, F_LIMIT_KEY)
    if f[1] and f[1] ~= '' then redis.call('HINCRBY', RUNNING, f[1], 1) end
    if f[2] then redis.call('HINCRBY', RUNNING, group_of(f[1], f[2]), 1) end
  end
  local running = redis.call('ZCOUNT', LEASES, '-inf', '(+inf')
  if running > 0 then redis.call('SET', RUNNING_COUNT, running) else none_running() end
end
return { scanned[1], found, 1 }
