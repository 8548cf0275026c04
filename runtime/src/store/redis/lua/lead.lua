-- Takes or renews a named lease (one holder at a time).
-- KEYS: the lease's hash (`P:lead:{NAME}`, a hash tag of its own).
-- ARGV: holder, ttl ms, the lease clock ('' for Redis's own, else the caller's now in ms).
-- Returns 1 when the holder holds the lease afterwards, 0 while another's lease runs.
local holder, ttl = ARGV[1], tonumber(ARGV[2])
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local current = redis.call('HMGET', KEYS[1], 'holder', 'until')
if current[1] and current[1] ~= holder and tonumber(current[2]) > now then
  return 0
end
redis.call('HSET', KEYS[1], 'holder', holder, 'until', string.format('%.0f', now + ttl))
-- The key goes when its lease would have; with the caller's clock `until` decides.
redis.call('PEXPIRE', KEYS[1], math.max(1, ttl))
return 1
