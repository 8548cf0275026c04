-- When the longest-waiting ready job was due: the earliest run time among ready jobs (one per
-- priority band of each ready set, the first of each) and due delayed ones. ARGV: now.
-- Returns ms or false.
local now = tonumber(ARGV[1])
local oldest = nil
local sets = { READY }
for _, tenant in ipairs(redis.call('SMEMBERS', TENANTS)) do sets[#sets + 1] = ready_key(tenant) end
for _, set in ipairs(sets) do
  local from = '-inf'
  while true do
    local first = redis.call('ZRANGEBYSCORE', set, from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #first == 0 then break end
    local score = tonumber(first[2])
    local band = math.floor(score / MS_SPAN)
    local at = score - band * MS_SPAN
    if not oldest or at < oldest then oldest = at end
    from = int((band + 1) * MS_SPAN)
  end
end
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
if #due > 0 and (not oldest or tonumber(due[2]) < oldest) then oldest = tonumber(due[2]) end
if oldest then return int(oldest) end
return false
