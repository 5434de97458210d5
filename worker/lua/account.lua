-- Pause or resume an account. ARGV[4] account, ARGV[5] 'pause'|'resume', ARGV[6] event JSON,
-- ARGV[7] reason. Resume re-queues every job that waited; their ids are returned as JSON.
-- Resume wants the records of the jobs that wait declared.
local name = ARGV[4]
local acc = K.account(name)
if redis.call('EXISTS', acc) == 0 then return {'no_account', '[]'} end
local status = redis.call('HGET', acc, 'status')
if ARGV[5] == 'pause' then
  if status == 'paused' then return {'unchanged', '[]'} end
  redis.call('HSET', acc, 'status', 'paused', 'paused_reason', ARGV[7], 'paused_at', NOW)
  publish(ARGV[6])
  return {'paused', '[]'}
end
if status ~= 'paused' then return {'unchanged', '[]'} end
local ids = redis.call('SMEMBERS', K.waiting(name))
for _, id in ipairs(ids) do want(N.job(id)) end
local wanted = wanting()
if wanted then return wanted end
want_state('queued')
for _, id in ipairs(ids) do
  local state = redis.call('HGET', K.job(id), 'state')
  if state then want_state(state) end
end
wanted = wanting()
if wanted then return wanted end
redis.call('HSET', acc, 'status', 'active')
redis.call('HDEL', acc, 'paused_reason', 'paused_at')
redis.call('DEL', K.waiting(name))
local queued = {}
for _, id in ipairs(ids) do
  local state = redis.call('HGET', K.job(id), 'state')
  if state == 'parked' or state == 'queued' then
    set_state(id, state, 'queued')
    redis.call('HDEL', K.job(id), 'waiting_for')
    outbox(id, NOW + GRACE)
    queued[#queued + 1] = id
  end
end
publish(ARGV[6])
return {'resumed', cjson.encode(queued)}
