-- Removes a key/value entry. KEYS: entry, key set, expiry set. ARGV: name.
-- Returns 1 if it existed.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])
