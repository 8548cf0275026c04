-- Takes a token from a rate-limit bucket (GCRA; the same arithmetic as store/rate.rs).
-- KEYS: the bucket. ARGV: now µs, interval µs, burst.
-- Returns allowed (1/0), remaining, retry after µs, reset µs.
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next = tat + interval
local allow_at = next - burst * interval
if now < allow_at then
  return { 0, 0, allow_at - now, tat - now }
end
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
return { 1, math.floor((now - allow_at) / interval), 0, next - now }
