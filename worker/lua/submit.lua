-- Accept one job: idempotency, the record, acquire-or-park for submissions, outbox, events.
-- ARGV[4]: JSON {id, account, gate, cap, key, content, fields, accepted}; a job that parks
-- also gets job.parked, made from the accepted event.
local job = cjson.decode(ARGV[4])
local account = job.account
want_state('queued')
want_state('parked')
local wanted = wanting()
if wanted then return wanted end
if redis.call('EXISTS', K.account(account)) == 0 then return {'no_account', ''} end
local idem, expiry = K.idem(account), K.idem_expiry(account)
if job.key ~= '' then
  -- A finished job's key expires with its record (exp: when); an expired one is reused.
  local found = redis.call('HMGET', idem, 'key:' .. job.key, 'exp:' .. job.key)
  if found[1] and not (found[2] and tonumber(found[2]) <= NOW) then
    return {'duplicate', found[1]}
  end
end
if job.content ~= '' then
  -- Held only while its job is not over (finish_job frees it).
  local existing = redis.call('HGET', idem, 'content:' .. job.content)
  if existing then return {'duplicate', existing} end
end
local state = 'queued'
if job.gate then
  local decision = acquire_or_park(account, job.id, tonumber(job.cap), true)
  if decision == 'full' then return {'full', tostring(redis.call('LLEN', K.parked(account)))} end
  if decision == 'parked' then state = 'parked' end
end
local jk = K.job(job.id)
local args = {'state', state, 'created_at', NOW, 'updated_at', NOW, 'attempts', 0}
for k, v in pairs(job.fields) do
  args[#args + 1] = k
  args[#args + 1] = tostring(v)
end
if state == 'parked' then
  args[#args + 1] = 'waiting_for'
  args[#args + 1] = 'gate'
end
redis.call('HSET', jk, unpack(args))
redis.call('ZADD', K.jobs_by_state(state), NOW, job.id)
redis.call('ZADD', K.jobs_by_account(account), NOW, job.id)
if job.key ~= '' then
  redis.call('HSET', idem, 'key:' .. job.key, job.id)
  redis.call('HDEL', idem, 'exp:' .. job.key)
  redis.call('ZREM', expiry, job.key)
end
if job.content ~= '' then redis.call('HSET', idem, 'content:' .. job.content, job.id) end
if state == 'queued' then outbox(job.id, NOW + GRACE) end
publish(job.accepted)
if state == 'parked' then
  local parked = cjson.decode(job.accepted)
  parked.id = parked.id .. '-parked'
  parked.type = 'job.parked'
  parked.reason = 'gate'
  publish(cjson.encode(parked))
end
return {state, job.id}
