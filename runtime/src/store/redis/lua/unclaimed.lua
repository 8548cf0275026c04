-- The running jobs one claim took: those whose worker is ARGV[1] (as a JSON string) and whose
-- attempt started at ARGV[2], the claim's time. A worker whose claim reply was lost (the
-- connection dropped after Redis ran the claim) finds them here and puts them back without
-- spending an attempt. Returns id, token per job; reads every running job of the queue.
local worker, started = ARGV[1], ARGV[2]
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(+inf')) do
  local f = redis.call('HMGET', JOB .. id, F_STATE, F_WORKER, F_ATTEMPT_STARTED_AT, F_TOKEN)
  if f[1] == 'running' and f[2] == worker and f[3] == started then
    out[#out + 1] = id
    out[#out + 1] = f[4]
  end
end
return out
