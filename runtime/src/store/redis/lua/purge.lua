-- Removes finished jobs past their retention, failure records and events older than the
-- horizon. ARGV: now, keep succeeded ms, keep cancelled ms, keep dead ms, limit, event horizon.
-- Returns the removed job ids, then (last) how many events went.
local now, limit, horizon = tonumber(ARGV[1]), tonumber(ARGV[5]), ARGV[6]
local keep = { succeeded = tonumber(ARGV[2]), cancelled = tonumber(ARGV[3]), dead = tonumber(ARGV[4]) }
local out = {}
for state, ms in pairs(keep) do
  local expired = redis.call('ZRANGEBYSCORE', FINISHED[state], '-inf', int(now - ms), 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    remove_job(id)
    out[#out + 1] = id
  end
end
redis.call('ZREMRANGEBYSCORE', FAILURES, '-inf', '(' .. horizon)
-- Events are appended in time order (almost: the clocks of several hosts differ); trim up to
-- the first event inside the horizon.
local removed = 0
local batch = redis.call('XRANGE', EVENTS, '-', '+', 'COUNT', 1000)
local keep_from = nil
for _, entry in ipairs(batch) do
  local fields = entry[2]
  for j = 1, #fields, 2 do
    -- `at` is the fourth word of a value.
    local at = string.match(fields[j + 1], '^%S+ %S+ %S+ (%d+)')
    if at and tonumber(at) >= tonumber(horizon) then keep_from = entry[1] end
  end
  if keep_from then break end
  removed = removed + #fields / 2
end
if not keep_from and #batch > 0 then
  local ms, seq = string.match(batch[#batch][1], '(%d+)-(%d+)')
  keep_from = ms .. '-' .. int(tonumber(seq) + 1)
end
if keep_from then redis.call('XTRIM', EVENTS, 'MINID', keep_from) end
out[#out + 1] = removed
return out
