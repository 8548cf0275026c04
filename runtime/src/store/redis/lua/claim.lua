-- Takes up to `limit` ready jobs for a worker under a new lease, after promoting due ones.
-- ARGV: now, worker (as a JSON string), limit, lease ms, most running jobs per tenant (0: no
-- limit), the caller's clock for leases ('' for Redis's), most running jobs of the queue (0: no
-- limit), most running jobs per limit key (0: no limit), the rate limit's interval between two
-- tokens in µs (0: no limit) and its burst. Returns the lease expiry, then for
-- each claimed job its id and its record (HGETALL, as read before the
-- claim wrote) as one JSON array of names and values: `cjson` writes it in C, where a Lua table
-- of strings turned into a reply costs Redis a tenth of its work. The reader applies what `take`
-- writes itself (`Taken` in claim.rs).
--
-- With tenants, jobs are taken one at a time, the same rule as every store (`fair.rs`): the
-- highest priority waiting; among groups (each tenant, and jobs without one) whose best job has
-- it, the tenant served longest ago (TURNS), then its group (a limit key of it) served longest
-- ago; a tenant or a key at its running limit is passed over.
local now, worker, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local clock = lease_clock(ARGV[6])
local expires = int(clock + tonumber(ARGV[4]))
-- A lease's fencing token is the job's last one plus one, and no less than the lease clock's
-- milliseconds × 1024: a job whose record was restored from an older snapshot never hands out
-- a token a worker from before the restore may still hold.
local token_floor = clock * 1024
-- Numbers as text, formatted once per call: a job's attempt and token were parsed and printed
-- per job, and printing a number is a tenth of a claim's cost in Redis.
local floor_text = int(token_floor)
local next_attempt = {}
local max_running = tonumber(ARGV[5]) or 0
local max_in_queue = tonumber(ARGV[7]) or 0
local max_per_key = tonumber(ARGV[8]) or 0
local rate_interval, rate_burst = tonumber(ARGV[9]) or 0, tonumber(ARGV[10]) or 0
promote(now, 1000)
if redis.call('EXISTS', PAUSED) == 1 then return {} end
local out = { expires }
if max_in_queue > 0 then
  limit = math.min(limit, max_in_queue - (tonumber(redis.call('GET', RUNNING_COUNT)) or 0))
end
-- A token bucket of starts (`rate.rs`, the same arithmetic), timed by the lease clock.
local bucket_now, tat = 0, 0
if rate_interval > 0 then
  if ARGV[6] ~= '' then
    bucket_now = clock * 1000
  else
    local t = redis.call('TIME')
    bucket_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  tat = math.max(tonumber(redis.call('GET', START_BUCKET)) or 0, bucket_now)
  local free = math.floor((bucket_now + rate_burst * rate_interval - tat) / rate_interval)
  limit = math.min(limit, math.max(0, math.min(free, rate_burst)))
end
if limit <= 0 then return out end
-- Takes the tokens of the `n` jobs this claim started.
local function spend(n)
  if rate_interval > 0 and n > 0 then
    -- One key per rate-limited queue, kept: a time in the past means a full bucket.
    redis.call('SET', START_BUCKET, int(tat + n * rate_interval))
  end
end

-- Leases job `id`; its tenant, whose running count it keeps, comes from its record.
-- What it writes, `Taken::apply` in claim.rs writes again into the answer: keep them together.
local function take(id)
  local key = JOB .. id
  zrem_later(STATE.queued, id)
  local record = redis.call('HGETALL', key)
  -- An id whose record is gone (removed by hand) is dropped.
  if #record == 0 then return end
  local attempt, token, started, tenant, lk = '0', false, false, false, false
  for i = 1, #record, 2 do
    local name = record[i]
    if name == F_ATTEMPT then attempt = record[i + 1]
    elseif name == F_TOKEN then token = record[i + 1]
    elseif name == F_STARTED_AT then started = true
    elseif name == F_TENANT then tenant = record[i + 1]
    elseif name == F_LIMIT_KEY then lk = record[i + 1]
    end
  end
  if tenant and tenant ~= '' then zrem_later(tenant_state('queued', tenant), id) end
  local following = next_attempt[attempt]
  if not following then
    following = tostring(tonumber(attempt) + 1)
    next_attempt[attempt] = following
  end
  attempt = following
  -- A job claimed before holds a token; the next is one more unless the floor is higher.
  if token and tonumber(token) + 1 > token_floor then
    token = int(tonumber(token) + 1)
  else
    token = floor_text
  end
  if started then
    redis.call('HSET', key, F_STATE, 'running', F_ATTEMPT, attempt, F_TOKEN, token,
      F_WORKER, worker, F_ATTEMPT_STARTED_AT, now, F_LEASE_EXPIRES, expires)
  else
    redis.call('HSET', key, F_STATE, 'running', F_ATTEMPT, attempt, F_TOKEN, token,
      F_WORKER, worker, F_ATTEMPT_STARTED_AT, now, F_LEASE_EXPIRES, expires, F_STARTED_AT, now)
  end
  index_later(id, 'running', nil, nil, expires, now, tenant, lk)
  emit_later(id, 'started', 'running', attempt, now)
  out[#out + 1] = id
  out[#out + 1] = cjson.encode(record)
end

-- The groups with jobs waiting; past GROUPS_LOOKED_AT of them (a tenant's many keys), a random
-- sample of that many each claim, so no tenant's keys can make every claim costly.
local GROUPS_LOOKED_AT = 4096
local tenants
if redis.call('SCARD', TENANTS) > GROUPS_LOOKED_AT then
  tenants = redis.call('SRANDMEMBER', TENANTS, GROUPS_LOOKED_AT)
else
  tenants = redis.call('SMEMBERS', TENANTS)
end
if #tenants == 0 then
  -- Not ZPOPMIN: its scores, formatted as text for nobody, cost more than the removal.
  local ids = redis.call('ZRANGE', READY, 0, limit - 1)
  if #ids > 0 then redis.call('ZREMRANGEBYRANK', READY, 0, #ids - 1) end
  for _, id in ipairs(ids) do take(id) end
  spend(#ids)
  flush_later()
  return out
end
table.sort(tenants)

-- Reads the best job of group `g` into g.id and g.band (lower bands hold higher priorities).
local function head(g)
  local first = redis.call('ZRANGE', g.key, 0, 0, 'WITHSCORES')
  if #first == 0 then
    g.id = nil
    if g.name ~= '' then redis.call('SREM', TENANTS, g.name) end
    -- A key's turn goes with its last waiting job (keys come and go; tenants' turns stay).
    if g.keyed then redis.call('HDEL', TURNS, g.name) end
  else
    g.id = first[1]
    g.band = math.floor(tonumber(first[2]) / MS_SPAN)
  end
end

-- The turns of these groups and their tenants (not every turn: keys come in thousands), and the
-- last turn given, kept in TURN_COUNTER (found from every turn once, where it is missing).
local turns = {}
local last_turn = tonumber(redis.call('GET', TURN_COUNTER))
if not last_turn then
  last_turn = 0
  local stored = redis.call('HGETALL', TURNS)
  for i = 2, #stored, 2 do last_turn = math.max(last_turn, tonumber(stored[i])) end
end
local next_turn = last_turn + 1
local wanted = {}
for _, name in ipairs(tenants) do
  wanted[#wanted + 1] = name
  local cut = string.find(name, '\31', 1, true)
  if cut then wanted[#wanted + 1] = string.sub(name, 1, cut - 1) end
end
wanted[#wanted + 1] = ''
for i = 1, #wanted, 1000 do
  local slice = { unpack(wanted, i, math.min(i + 999, #wanted)) }
  local values = redis.call('HMGET', TURNS, unpack(slice))
  for j, name in ipairs(slice) do
    if values[j] then turns[name] = tonumber(values[j]) end
  end
end
-- Each tenant's share: its turn and how many more of its jobs may start.
local shares = {}
local function share_of(tenant)
  local share = shares[tenant]
  if not share then
    local room = limit
    if max_running > 0 and tenant ~= '' then
      room = math.min(limit, max_running - (tonumber(redis.call('HGET', RUNNING, tenant)) or 0))
    end
    share = { tenant = tenant, room = room, turn = turns[tenant] or 0 }
    shares[tenant] = share
  end
  return share
end
local groups = {}
local keyed_groups = false
local names = { '' }
for _, name in ipairs(tenants) do names[#names + 1] = name end
for _, name in ipairs(names) do
  local cut = string.find(name, '\31', 1, true)
  local tenant = name
  if cut then tenant = string.sub(name, 1, cut - 1) end
  local room = limit
  if cut and max_per_key > 0 then
    room = math.min(limit, max_per_key - (tonumber(redis.call('HGET', RUNNING, name)) or 0))
  end
  local share = share_of(tenant)
  if cut then keyed_groups = true end
  local g = { name = name, keyed = cut ~= nil, key = ready_key(name), room = room, share = share }
  if cut then g.turn = turns[name] or 0 else g.turn = share.turn end
  -- A group at its limit is passed over without a look at its jobs.
  if room > 0 and share.room > 0 then head(g) end
  groups[#groups + 1] = g
end

local taken = 0
if not keyed_groups then
  -- One group per tenant: its share is its own (the loop before keys, a tenth cheaper per
  -- group than the general one below, which a claim over a thousand tenants feels).
  for _, g in ipairs(groups) do g.room = math.min(g.room, g.share.room) end
  while taken < limit do
    local best = nil
    for _, g in ipairs(groups) do
      if g.id and g.room > 0 and (not best or g.band < best.band
          or (g.band == best.band and g.turn < best.turn)) then
        best = g
      end
    end
    if not best then break end
    redis.call('ZREM', best.key, best.id)
    take(best.id)
    taken = taken + 1
    best.room = best.room - 1
    best.turn = next_turn
    next_turn = next_turn + 1
    redis.call('HSET', TURNS, best.name, best.turn)
    head(best)
  end
end
while keyed_groups and taken < limit do
  local best = nil
  for _, g in ipairs(groups) do
    if g.id and g.room > 0 and g.share.room > 0 and (not best or g.band < best.band
        or (g.band == best.band and (g.share.turn < best.share.turn
          or (g.share.turn == best.share.turn and g.turn < best.turn)))) then
      best = g
    end
  end
  if not best then break end
  redis.call('ZREM', best.key, best.id)
  take(best.id)
  taken = taken + 1
  best.room = best.room - 1
  best.share.room = best.share.room - 1
  best.turn = next_turn
  best.share.turn = next_turn
  next_turn = next_turn + 1
  redis.call('HSET', TURNS, best.share.tenant, next_turn - 1)
  if best.keyed then redis.call('HSET', TURNS, best.name, next_turn - 1) end
  head(best)
end
if next_turn > last_turn + 1 then redis.call('SET', TURN_COUNTER, int(next_turn - 1)) end
spend(taken)
flush_later()
return out
