-- Removes up to `limit` dead letters. ARGV: limit. Returns their ids.
local ids = redis.call('ZRANGE', STATE.dead, 0, tonumber(ARGV[1]) - 1)
for _, id in ipairs(ids) do remove_job(id) end
return ids
