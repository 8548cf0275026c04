-- Live keys starting with a prefix, in key order, after a cursor. KEYS: key set, expiry set;
-- ARGV: entry key prefix, name prefix, cursor (''), limit, now ms.
-- Returns name, expiry ('' for none), metadata ('' for none) per key, at most limit + 1 keys.
local KEYSET, EXPIRY = KEYS[1], KEYS[2]
local entries, prefix, cursor, limit, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local from = '[' .. prefix
if cursor ~= '' and cursor >= prefix then from = '(' .. cursor end
local out, n = {}, 0
while true do
  local names = redis.call('ZRANGE', KEYSET, from, '+', 'BYLEX', 'LIMIT', 0, 100)
  if #names == 0 then return out end
  for _, name in ipairs(names) do
    if string.sub(name, 1, #prefix) ~= prefix then return out end
    local f = redis.call('HMGET', entries .. name, F_EXPIRES, F_METADATA)
    if not f[1] then
      -- Expired natively: drop the listing entry too.
      redis.call('ZREM', KEYSET, name)
      redis.call('ZREM', EXPIRY, name)
    elseif f[1] == '' or tonumber(f[1]) > now then
      out[#out + 1] = name
      out[#out + 1] = f[1]
      out[#out + 1] = f[2]
      n = n + 1
      if n > limit then return out end
    end
    from = '(' .. name
  end
end
