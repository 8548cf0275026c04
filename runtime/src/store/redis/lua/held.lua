-- How many queued jobs a claim under the given limits would pass over because a limit holds
-- them (`JobStore::held_by_limits`): all of them while the queue runs its cap or its bucket of
-- starts is empty; else those of the groups (tenants, keys) at their running limits.
-- ARGV: most running jobs per tenant (0: no limit), of the queue, per key, the rate limit's
-- interval in µs (0: none) and burst, the caller's clock in ms ('' for Redis's).
local max_tenant, max_queue, max_key = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
-- Past 4,096 groups, a random sample of that many, the count scaled up: an estimate, at the
-- cost of a claim.
local group_count = redis.call('SCARD', TENANTS)
local groups
if group_count > 4096 then
  groups = redis.call('SRANDMEMBER', TENANTS, 4096)
else
  groups = redis.call('SMEMBERS', TENANTS)
end
local scale = math.max(1, group_count / math.max(1, #groups))
local sizes = {}
local total = 0
for _, name in ipairs(groups) do
  sizes[name] = redis.call('ZCARD', ready_key(name))
  total = total + sizes[name]
end
total = math.floor(total * scale + 0.5) + redis.call('ZCARD', READY)
if total == 0 then return 0 end
if max_queue > 0 and (tonumber(redis.call('GET', RUNNING_COUNT)) or 0) >= max_queue then
  return total
end
if interval > 0 then
  local t
  if ARGV[6] ~= '' then
    t = tonumber(ARGV[6]) * 1000
  else
    local time = redis.call('TIME')
    t = tonumber(time[1]) * 1000000 + tonumber(time[2])
  end
  local tat = math.max(tonumber(redis.call('GET', START_BUCKET)) or 0, t)
  if math.floor((t + burst * interval - tat) / interval) <= 0 then return total end
end
local held = 0
for _, name in ipairs(groups) do
  local cut = string.find(name, '\31', 1, true)
  local tenant = name
  if cut then tenant = string.sub(name, 1, cut - 1) end
  local running = function(field) return tonumber(redis.call('HGET', RUNNING, field)) or 0 end
  if (max_tenant > 0 and tenant ~= '' and running(tenant) >= max_tenant)
      or (cut and max_key > 0 and running(name) >= max_key) then
    held = held + sizes[name]
  end
end
return math.floor(held * scale + 0.5)
