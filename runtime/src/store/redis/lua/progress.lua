-- Records a running job's progress. ARGV: id, token, progress JSON, event detail, now.
local id, token, progress, detail, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = JOB .. id
local refused = check_lease(key, token)
if refused then return refused end
redis.call('HSET', key, F_PROGRESS, progress)
emit(id, 'progress', 'running', redis.call('HGET', key, F_ATTEMPT), now, detail)
return 'ok'
