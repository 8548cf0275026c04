-- Shared by every queue script; each is built (`scripts.rs`) from a prelude, this file, then
-- its own file.
--
-- Every key a script touches belongs to one queue and carries that queue's hash tag, so each
-- script runs on a single slot and Redis Cluster works. The prelude names the queue's fixed
-- keys, which come in KEYS (`keys.rs` has the table): READY, DELAYED, LEASES, EVENTS, IDEM,
-- PAUSED, FAILURES, the id set of each state but running (STATE[state]), the finished jobs by
-- time (FINISHED[state]), JOB (a job's hash is JOB followed by the job id), TENANTS (groups
-- with queued jobs, a set: a group is a tenant, or a tenant's limit key, see `group_of`), TURNS
-- (when each tenant and each keyed group was last served, a hash, '' for jobs without a
-- tenant), RUNNING (running jobs per tenant and per keyed group, a hash), TENANT_READY (a
-- group's queued jobs are TENANT_READY followed by the group; jobs of no group wait in READY),
-- RUNNING_COUNT and START_BUCKET (a rate-limited queue's next token's arrival time, in µs).
-- It also names the fields of a job's hash, F_STATE = 's' and so on (`codec.rs` has the table).
--
-- Running jobs are the members of LEASES (scored by lease expiry); RUNNING_COUNT counts them
-- through every transition, so a running job that lost its lease entry shows as a difference
-- (`lost.lua` finds it).
--
-- While jobs run, LEASES also holds this member, scored +inf so no recovery or count sees it.
-- Longer than 64 bytes (zset-max-listpack-value), it keeps LEASES a skip list: a small sorted set
-- is otherwise a listpack, whose inserts read every member's score (most of a claim's cost at
-- a hundred running jobs). It leaves when the running count drops to 0.
local LEASE_KEEPER = '~ keeps this sorted set a skip list while jobs run (see common.lua) ~~~~'

-- Stream entries kept per queue (approximately: trimming is lazy). An entry holds the events
-- of one script call, at most EVENTS_PER_ENTRY of them: a field per event, named by its job, its
-- value `kind state attempt at[ detail]`.
local EVENT_CAP = 20000
local EVENTS_PER_ENTRY = 100
-- Run times and priorities share one sorted-set score exactly (53 bits): 11 bits of priority,
-- 42 bits of milliseconds (until the year 2109).
local MS_SPAN = 4398046511104

-- A number as an integer string: Lua would print large numbers with an exponent.
local function int(n)
  return string.format('%.0f', n)
end

-- The time leases are measured by, in ms: Redis's own clock, the same for every process
-- whatever its clock says; or `given`, the caller's, when the store was opened with
-- `clock=caller` (tests that simulate time).
local function lease_clock(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ready_score(priority, run_at)
  local p = math.max(-1024, math.min(1023, tonumber(priority)))
  local r = math.max(0, math.min(MS_SPAN - 1, tonumber(run_at)))
  return int((1023 - p) * MS_SPAN + r)
end

-- The state a waiting job has at `now`.
local function waiting_state(run_at, now, retrying)
  if tonumber(run_at) > tonumber(now) then
    if retrying then return 'retrying' end
    return 'scheduled'
  end
  return 'queued'
end

-- The group of a job of `tenant` (false or '' for none) with limit key `lk` (false for none):
-- the tenant itself, or the tenant and the key joined by a unit separator (`fair.rs`).
local function group_of(tenant, lk)
  if lk then return (tenant or '') .. '\31' .. lk end
  return tenant or ''
end

-- The ready set of `group` ('' for jobs of no tenant and no key).
local function ready_key(group)
  if group ~= '' then return TENANT_READY .. group end
  return READY
end

-- The ids of `tenant`'s jobs in `state`, by id: a tenant's listings and its quota read these,
-- not the whole queue.
local function tenant_state(state, tenant)
  return TENANT_STATE .. state .. ':' .. tenant
end

-- Files job `id` (of `tenant`, false or '' for none, under limit key `lk`, false for none)
-- under the indexes of `state`.
local function index(id, state, priority, run_at, lease_expires, now, tenant, lk)
  if state ~= 'running' then redis.call('ZADD', STATE[state], '0', id) end
  if tenant and tenant ~= '' then redis.call('ZADD', tenant_state(state, tenant), '0', id) end
  if state == 'queued' then
    local group = group_of(tenant, lk)
    redis.call('ZADD', ready_key(group), ready_score(priority, run_at), id)
    if group ~= '' then redis.call('SADD', TENANTS, group) end
  elseif state == 'scheduled' or state == 'retrying' then
    redis.call('ZADD', DELAYED, run_at, id)
  elseif state == 'running' then
    redis.call('ZADD', LEASES, '+inf', LEASE_KEEPER, lease_expires, id)
    redis.call('INCR', RUNNING_COUNT)
    if tenant and tenant ~= '' then redis.call('HINCRBY', RUNNING, tenant, 1) end
    if lk then redis.call('HINCRBY', RUNNING, group_of(tenant, lk), 1) end
  else
    redis.call('ZADD', FINISHED[state], now, id)
  end
end

-- A lifecycle event as a stream entry's field and value.
local function event(id, kind, state, attempt, now, detail)
  local value = kind .. ' ' .. state .. ' ' .. attempt .. ' ' .. now
  if detail then value = value .. ' ' .. detail end
  return id, value
end

-- Appends a lifecycle event to the queue's stream.
local function emit(id, kind, state, attempt, now, detail)
  local field, value = event(id, kind, state, attempt, now, detail)
  redis.call('XADD', EVENTS, 'MAXLEN', '~', EVENT_CAP, '*', field, value)
end

-- What is left to do when a queue's running count reaches 0.
local function none_running()
  redis.call('DEL', RUNNING_COUNT)
  redis.call('ZREM', LEASES, LEASE_KEEPER)
end

-- Sorted-set writes gathered during a script and sent at its end as one command per key: a
-- call per member costs more in Lua than the member costs in Redis. Only for scripts where no
-- member is both added to and removed from one key (removals are sent first).
local later_add, later_rem, later_events, later_running = {}, {}, {}, 0
local function zadd_later(key, score, member)
  local list = later_add[key]
  if not list then
    -- The keeper first: a set that becomes a skip list does so before the other members go in.
    if key == LEASES then list = { '+inf', LEASE_KEEPER } else list = {} end
    later_add[key] = list
  end
  list[#list + 1] = score
  list[#list + 1] = member
end
local function zrem_later(key, member)
  local list = later_rem[key]
  if not list then list = {}; later_rem[key] = list end
  list[#list + 1] = member
end
-- `emit`, the event appended by `flush_later` with the others of this script.
local function emit_later(id, kind, state, attempt, now, detail)
  local field, value = event(id, kind, state, attempt, now, detail)
  later_events[#later_events + 1] = field
  later_events[#later_events + 1] = value
end
-- Sends the gathered writes (in slices: Lua's unpack has a limit).
local function flush_later()
  local per_entry = 2 * EVENTS_PER_ENTRY
  for i = 1, #later_events, per_entry do
    redis.call('XADD', EVENTS, 'MAXLEN', '~', EVENT_CAP, '*',
      unpack(later_events, i, math.min(i + per_entry - 1, #later_events)))
  end
  for key, list in pairs(later_rem) do
    for i = 1, #list, 1000 do redis.call('ZREM', key, unpack(list, i, math.min(i + 999, #list))) end
  end
  for key, list in pairs(later_add) do
    for i = 1, #list, 1000 do redis.call('ZADD', key, unpack(list, i, math.min(i + 999, #list))) end
  end
  if later_running ~= 0 and redis.call('INCRBY', RUNNING_COUNT, later_running) == 0 then
    none_running()
  end
  later_add, later_rem, later_events, later_running = {}, {}, {}, 0
end

-- `index`, with its sorted-set writes gathered until `flush_later`.
local function index_later(id, state, priority, run_at, lease_expires, now, tenant, lk)
  -- '0', not 0: a number would be formatted as text for every member.
  if state ~= 'running' then zadd_later(STATE[state], '0', id) end
  if tenant and tenant ~= '' then zadd_later(tenant_state(state, tenant), '0', id) end
  if state == 'queued' then
    local group = group_of(tenant, lk)
    zadd_later(ready_key(group), ready_score(priority, run_at), id)
    if group ~= '' then redis.call('SADD', TENANTS, group) end
  elseif state == 'scheduled' or state == 'retrying' then
    zadd_later(DELAYED, run_at, id)
  elseif state == 'running' then
    zadd_later(LEASES, lease_expires, id)
    later_running = later_running + 1
    if tenant and tenant ~= '' then redis.call('HINCRBY', RUNNING, tenant, 1) end
    if lk then redis.call('HINCRBY', RUNNING, group_of(tenant, lk), 1) end
  else
    zadd_later(FINISHED[state], now, id)
  end
end

-- One running job less for `field` of RUNNING.
local function running_less(field)
  if redis.call('HINCRBY', RUNNING, field, -1) <= 0 then redis.call('HDEL', RUNNING, field) end
end

-- Takes job `id` (of `tenant`, under limit key `lk`) out of the indexes of `state`. A group's
-- empty ready set leaves TENANTS at its next claim.
local function unindex(id, state, tenant, lk)
  if state ~= 'running' then redis.call('ZREM', STATE[state], id) end
  if tenant and tenant ~= '' then redis.call('ZREM', tenant_state(state, tenant), id) end
  if state == 'queued' then
    redis.call('ZREM', ready_key(group_of(tenant, lk)), id)
  elseif state == 'scheduled' or state == 'retrying' then
    redis.call('ZREM', DELAYED, id)
  elseif state == 'running' then
    redis.call('ZREM', LEASES, id)
    if redis.call('DECR', RUNNING_COUNT) == 0 then none_running() end
    if tenant and tenant ~= '' then running_less(tenant) end
    if lk then running_less(group_of(tenant, lk)) end
  else
    redis.call('ZREM', FINISHED[state], id)
  end
end

-- The closed-attempts list `list` (JSON, or false) with the open attempt (number, worker JSON,
-- start) closed at `now` with `err` (JSON) appended.
local function closed(list, number, worker, started, now, err)
  local attempt = '{"number":' .. number .. ',"worker":' .. worker .. ',"started_at":' .. started
    .. ',"finished_at":' .. now
  if err then attempt = attempt .. ',"error":' .. err end
  attempt = attempt .. '}'
  if list then return string.sub(list, 1, -2) .. ',' .. attempt .. ']' end
  return '[' .. attempt .. ']'
end

-- Ends the open attempt of the job at `key` (if any), with `err` (JSON) when it failed.
local function close_attempt(key, err, now)
  local cur = redis.call('HMGET', key, F_WORKER, F_ATTEMPT_STARTED_AT, F_ATTEMPT, F_ATTEMPTS)
  if not cur[2] then return end
  redis.call('HSET', key, F_ATTEMPTS, closed(cur[4], cur[3], cur[1], cur[2], now, err))
  redis.call('HDEL', key, F_WORKER, F_ATTEMPT_STARTED_AT)
end

-- Moves up to `max` due scheduled and retrying jobs to the ready set; returns how many.
local function promote(now, max)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(due) do
    local key = JOB .. id
    local f = redis.call('HMGET', key, F_STATE, F_PRIORITY, F_RUN_AT, F_TENANT, F_LIMIT_KEY)
    redis.call('ZREM', DELAYED, id)
    if f[1] then
      if f[1] ~= 'running' then redis.call('ZREM', STATE[f[1]], id) end
      if f[4] then redis.call('ZREM', tenant_state(f[1], f[4]), id) end
      redis.call('HSET', key, F_STATE, 'queued')
      index(id, 'queued', f[2], f[3], nil, now, f[4], f[5])
    end
  end
  return #due
end

-- Checks that the job at `key` runs under lease `token`: nil when it does, else the answer.
local function check_lease(key, token)
  local f = redis.call('HMGET', key, F_STATE, F_TOKEN)
  if not f[1] then return 'missing' end
  if f[1] ~= 'running' or f[2] ~= token then return 'lost' end
  return nil
end

-- The field of idempotency key `key` of `tenant` ('' for none) in the queue's key hash:
-- length-prefixed, so no tenant and key can spell another pair's field.
local function idem_field(tenant, key)
  return #tenant .. ':' .. tenant .. key
end

-- Removes job `id`: its hash, its indexes and its idempotency key.
local function remove_job(id)
  local key = JOB .. id
  local f = redis.call('HMGET', key, F_STATE, F_IDEMPOTENCY_KEY, F_TENANT, F_LIMIT_KEY, F_UNIQUE_KEY,
    F_DEBOUNCE_KEY)
  if f[1] then unindex(id, f[1], f[3], f[4]) end
  if f[2] then
    local field = idem_field(f[3] or '', f[2])
    if redis.call('HGET', IDEM, field) == id then redis.call('HDEL', IDEM, field) end
  end
  if f[5] then
    local field = idem_field(f[3] or '', f[5])
    if redis.call('HGET', UNIQUE, field) == id then redis.call('HDEL', UNIQUE, field) end
  end
  if f[6] then
    local field = idem_field(f[3] or '', f[6])
    if redis.call('HGET', DEBOUNCE, field) == id then redis.call('HDEL', DEBOUNCE, field) end
  end
  redis.call('DEL', key)
end
