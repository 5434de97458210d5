-- Apply one state change to a job atomically, compare-and-set on its state, with everything
-- that goes with it: gate release and hand-off, account pause/block, tracking, events.
-- ARGV[4]: JSON spec (see worker/store.py, Change). Returns {applied, previous state, next job}.
local s = cjson.decode(ARGV[4])
local id = s.id
local jk = K.job(id)
local state = redis.call('HGET', jk, 'state')
if not state then return {0, '', ''} end
if s.from then
  local ok = false
  for _, f in ipairs(s.from) do if f == state then ok = true end end
  if not ok then return {0, state, ''} end
end
local account = redis.call('HGET', jk, 'account')
if s.to then set_state(id, state, s.to) end
if s.set then
  for k, v in pairs(s.set) do
    if v == cjson.null or v == '' then redis.call('HDEL', jk, k)
    else redis.call('HSET', jk, k, tostring(v)) end
  end
end
if s.lease_clear then redis.call('ZREM', K.inflight(), id) end
if s.unpark then
  redis.call('LREM', K.parked(account), 0, id)
  redis.call('SREM', K.waiting(account), id)
end
if s.wait then redis.call('SADD', K.waiting(account), id) end
local acc = K.account(account)
if s.pause and redis.call('HGET', acc, 'status') ~= 'paused' then
  redis.call('HSET', acc, 'status', 'paused', 'paused_reason', s.pause.reason, 'paused_at', NOW)
  publish(s.pause.event)
end
if s.block then
  if redis.call('HGET', acc, 'blocked') ~= '1' then
    redis.call('HSET', acc, 'blocked', '1', 'blocked_at', NOW, 'probes', 0)
    publish(s.block.event)
  end
  local probes = redis.call('HINCRBY', acc, 'probes', 1)
  local delay = math.min(s.block.max_ms, s.block.initial_ms * 2 ^ (probes - 1))
  redis.call('ZADD', K.probes(), NOW + delay, account)
end
if s.unblock and redis.call('HGET', acc, 'blocked') == '1' then
  redis.call('HSET', acc, 'blocked', '0', 'probes', 0)
  redis.call('ZREM', K.probes(), account)
  publish(s.unblock)
end
local nxt = false
if s.release then nxt = release(account, id) end
if s.track then
  local sk = K.signature(account, s.track.sign_id)
  local args = {}
  for k, v in pairs(s.track.fields) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  redis.call('HSET', sk, unpack(args))
  local member = account .. ':' .. s.track.sign_id
  redis.call('ZADD', K.due(), s.track.due_at, member)
end
if s.untrack then
  local member = account .. ':' .. s.untrack
  redis.call('DEL', K.signature(account, s.untrack))
  redis.call('ZREM', K.due(), member)
end
if s.unconfirmed_until then redis.call('ZADD', K.unconfirmed(), s.unconfirmed_until, id) end
if s.terminal then
  finish_job(id, account, s.terminal)
elseif s.settled then
  redis.call('ZREM', K.unconfirmed(), id)
end
if s.requeue then redis.call('ZADD', K.outbox(), NOW, id) end
if s.events then
  for _, event in ipairs(s.events) do publish(event) end
end
return {1, state, nxt or ''}
