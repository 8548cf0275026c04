-- Finishes running jobs with their results. ARGV: id, token, result, now per job.
-- Returns per job: 'ok', 'lost' or 'missing'.
local out = {}
-- Without running counts per tenant and key, no running job has a tenant or a limit key: its
-- record need not be searched for them (a field a job lacks is a search of the whole record).
local tenants = redis.call('EXISTS', RUNNING) == 1
for i = 1, #ARGV, 4 do
  local id, token, result, now = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = JOB .. id
  local f
  if tenants then
    f = redis.call('HMGET', key, F_STATE, F_TOKEN, F_ATTEMPT, F_TENANT, F_LIMIT_KEY)
  else
    f = redis.call('HMGET', key, F_STATE, F_TOKEN, F_ATTEMPT)
  end
  if not f[1] then
    out[#out + 1] = 'missing'
  elseif f[1] ~= 'running' or f[2] ~= token then
    out[#out + 1] = 'lost'
  else
    -- The open attempt (F_WORKER, F_ATTEMPT_STARTED_AT) stays: a succeeded job's last attempt
    -- ended when it did. Its lease expiry stays too, unread once the job is not running.
    redis.call('HSET', key, F_STATE, 'succeeded', F_FINISHED_AT, now, F_RESULT, result)
    -- unindex(id, 'running', f[4], f[5]) and index(id, 'succeeded'), their set writes gathered.
    zrem_later(LEASES, id)
    later_running = later_running - 1
    if f[4] and f[4] ~= '' then
      running_less(f[4])
      zrem_later(tenant_state('running', f[4]), id)
    end
    if f[5] then running_less(group_of(f[4], f[5])) end
    index_later(id, 'succeeded', nil, nil, nil, now, f[4])
    emit_later(id, 'succeeded', 'succeeded', f[3], now)
    out[#out + 1] = 'ok'
  end
end
flush_later()
return out
