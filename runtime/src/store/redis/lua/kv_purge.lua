-- Removes expired key/value entries of one namespace. KEYS: key set, expiry set;
-- ARGV: entry key prefix, now ms, limit. Returns how many.
local names = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, name in ipairs(names) do
  redis.call('DEL', ARGV[1] .. name)
  redis.call('ZREM', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
end
return #names
