-- Adds jobs; a job whose idempotency key exists on this queue for its tenant is not added.
-- ARGV: now, wake channel ('' for none), queue name, then 12 fields per job: id, kind, payload, priority,
-- run_at, max_attempts, timeout_ms (''), idempotency key (''), tenant (''), headers JSON (''),
-- the tenant's quota of waiting jobs ('' for none), the limit key after '=' ('' for none), the
-- unique key after '=' ('' for none), the states in which a job with it makes a new one its
-- duplicate (comma-separated) and how long after it finished it still does (ms), the debounce
-- key after '=' ('' for none), its window (ms), its mode (trailing or leading) and its longest
-- wait (ms, '' for none).
-- Returns, per job, 1 and its id when added, 0 and the existing id when not, 2 and the waiting
-- job's id when a trailing debounce put the job's payload into that one; or, adding
-- nothing, -1 and "WAITING MAX" when a tenant would have more jobs waiting than its quota.
local now, channel, queue = ARGV[1], ARGV[2], ARGV[3]

-- The latest job of `tenant` with unique key `uk` (after '=', or ''), if it is still in one of
-- `states` or finished less than `window` ms ago.
local function unique_holder(tenant, uk, states, window)
  if uk == '' then return false end
  local holder = redis.call('HGET', UNIQUE, idem_field(tenant, string.sub(uk, 2)))
  if not holder then return false end
  local f = redis.call('HMGET', JOB .. holder, F_STATE, F_FINISHED_AT)
  if not f[1] then return false end
  if string.find(',' .. states .. ',', ',' .. f[1] .. ',', 1, true) then return holder end
  if f[2] and tonumber(f[2]) + tonumber(window) > tonumber(now) then return holder end
  return false
end

-- What the job at ARGV[i] (of `tenant`, due at `run_at`) does under its debounce rule, given
-- the latest job with its key (`DebounceRule::fold` in job.rs, the same rule): 'into' that
-- waiting job, due then; 'dropped' for that job; or 'new', due then (false: as asked).
local function fold(i, tenant, run_at)
  local dk = ARGV[i + 15]
  if dk == '' then return 'new', false, false end
  local window, mode, max_wait = tonumber(ARGV[i + 16]), ARGV[i + 17], ARGV[i + 18]
  local holder = redis.call('HGET', DEBOUNCE, idem_field(tenant, string.sub(dk, 2)))
  local f = {}
  if holder then f = redis.call('HMGET', JOB .. holder, F_STATE, F_CREATED_AT) end
  local t = tonumber(now)
  if mode == 'trailing' then
    local quiet = t + window
    if f[1] == 'scheduled' then
      local at = quiet
      if max_wait ~= '' then at = math.min(at, tonumber(f[2]) + tonumber(max_wait)) end
      return 'into', holder, int(math.max(at, t))
    end
    return 'new', false, int(math.max(tonumber(run_at), quiet))
  end
  if f[1] and t < tonumber(f[2]) + window then return 'dropped', holder, false end
  return 'new', false, false
end

-- Puts the input of the job at ARGV[i] into the waiting job `holder` of its burst, due at `at`.
local function debounce_into(holder, i, tenant, at)
  -- The holder may be a job of this call, its index writes still gathered: send them first.
  flush_later()
  local key = JOB .. holder
  local f = redis.call('HMGET', key, F_PRIORITY, F_LIMIT_KEY, F_ATTEMPT)
  redis.call('HSET', key, F_KIND, ARGV[i + 1], F_PAYLOAD, ARGV[i + 2], F_RUN_AT, at)
  if ARGV[i + 9] ~= '' then
    redis.call('HSET', key, F_HEADERS, ARGV[i + 9])
  else
    redis.call('HDEL', key, F_HEADERS)
  end
  local state = waiting_state(at, now, false)
  unindex(holder, 'scheduled', tenant, f[2])
  redis.call('HSET', key, F_STATE, state)
  index(holder, state, f[1], at, nil, now, tenant, f[2])
  emit_later(holder, 'debounced', state, f[3] or '0', now, 'runs at ' .. at)
end

-- The job the job at ARGV[i] would duplicate, if any: the one with its idempotency key, the
-- one its unique rule holds for, or one with its id.
local function existing_of(i)
  local id, idem, tenant = ARGV[i], ARGV[i + 7], ARGV[i + 8]
  local existing = false
  if idem ~= '' then existing = redis.call('HGET', IDEM, idem_field(tenant, idem)) end
  if not existing then existing = unique_holder(tenant, ARGV[i + 12], ARGV[i + 13], ARGV[i + 14]) end
  if not existing and redis.call('EXISTS', JOB .. id) == 1 then existing = id end
  return existing
end

-- Quotas first: nothing is written if any tenant would go over its own.
local adding, quota = {}, {}
for i = 4, #ARGV, 19 do
  local tenant, max = ARGV[i + 8], ARGV[i + 10]
  if tenant ~= '' and max ~= '' and not existing_of(i) then
    adding[tenant] = (adding[tenant] or 0) + 1
    quota[tenant] = math.min(quota[tenant] or math.huge, tonumber(max))
  end
end
for tenant, n in pairs(adding) do
  local waiting = redis.call('ZCARD', tenant_state('queued', tenant))
    + redis.call('ZCARD', tenant_state('scheduled', tenant))
    + redis.call('ZCARD', tenant_state('retrying', tenant))
  if waiting + n > quota[tenant] then return { -1, waiting .. ' ' .. int(quota[tenant]) } end
end

local out, ready = {}, 0
for i = 4, #ARGV, 19 do
  local id, kind, payload, priority, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local max_attempts, timeout, idem, tenant, headers = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  local lk = false
  if ARGV[i + 11] ~= '' then lk = string.sub(ARGV[i + 11], 2) end
  local existing = existing_of(i)
  local folding, holder, folded_at = 'new', false, false
  if not existing then folding, holder, folded_at = fold(i, tenant, run_at) end
  if existing or folding == 'dropped' then
    out[#out + 1] = 0
    out[#out + 1] = existing or holder
  elseif folding == 'into' then
    debounce_into(holder, i, tenant, folded_at)
    out[#out + 1] = 2
    out[#out + 1] = holder
  else
    if folded_at then run_at = folded_at end
    local state = waiting_state(run_at, now, false)
    -- The fields every transition reads come first: a small hash is a list, read in order.
    local fields = { F_STATE, state, F_ATTEMPT, '0', F_KIND, kind, F_PAYLOAD, payload,
      F_PRIORITY, priority, F_RUN_AT, run_at, F_MAX_ATTEMPTS, max_attempts, F_CREATED_AT, now }
    if timeout ~= '' then fields[#fields + 1] = F_TIMEOUT; fields[#fields + 1] = timeout end
    if idem ~= '' then
      fields[#fields + 1] = F_IDEMPOTENCY_KEY; fields[#fields + 1] = idem
      redis.call('HSET', IDEM, idem_field(tenant, idem), id)
    end
    if tenant ~= '' then fields[#fields + 1] = F_TENANT; fields[#fields + 1] = tenant end
    if headers ~= '' then fields[#fields + 1] = F_HEADERS; fields[#fields + 1] = headers end
    if lk then fields[#fields + 1] = F_LIMIT_KEY; fields[#fields + 1] = lk end
    local uk = ARGV[i + 12]
    if uk ~= '' then
      uk = string.sub(uk, 2)
      fields[#fields + 1] = F_UNIQUE_KEY; fields[#fields + 1] = uk
      redis.call('HSET', UNIQUE, idem_field(tenant, uk), id)
    end
    local dk = ARGV[i + 15]
    if dk ~= '' then
      dk = string.sub(dk, 2)
      fields[#fields + 1] = F_DEBOUNCE_KEY; fields[#fields + 1] = dk
      redis.call('HSET', DEBOUNCE, idem_field(tenant, dk), id)
    end
    redis.call('HSET', JOB .. id, unpack(fields))
    index_later(id, state, priority, run_at, nil, now, tenant, lk)
    emit_later(id, 'enqueued', state, 0, now)
    if state == 'queued' then ready = ready + 1 end
    out[#out + 1] = 1
    out[#out + 1] = id
  end
end
flush_later()
if ready > 0 and channel ~= '' then redis.call('PUBLISH', channel, queue) end
return out
