-- Writes a key/value entry. KEYS: entry, key set, expiry set.
-- ARGV: name, value, metadata JSON (''), expiry ms (''), wall-clock ms now.
-- The entry also expires natively when its expiry lies ahead of the wall clock.
local name, value, metadata, expires, wall = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], F_VALUE, value, F_METADATA, metadata, F_EXPIRES, expires)
redis.call('ZADD', KEYS[2], 0, name)
if expires ~= '' then
  redis.call('ZADD', KEYS[3], expires, name)
  if tonumber(expires) > tonumber(wall) then redis.call('PEXPIREAT', KEYS[1], expires) end
else
  redis.call('ZREM', KEYS[3], name)
end
return 1
