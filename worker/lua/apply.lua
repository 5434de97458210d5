-- Apply one state change to a job atomically, compare-and-set on its state, with everything
-- that goes with it: gate release and hand-off, account pause/block, tracking, the outbox,
-- events. ARGV[4]: JSON spec (see worker/store.py, Change). Returns {applied, previous state,
-- next job}, or the keys it wants declared. The job's fields are written in one HSET (and one
-- HDEL when a field must go): each Redis command counts on the hot path (a submission's outcome
-- is one run of this script).
local s = cjson.decode(ARGV[4])
local id = s.id
local jk = K.job(id)
local current = redis.call('HMGET', jk, 'state', 'account')
local state, account = current[1], current[2]
if not state then return {0, '', ''} end
-- The plan: the account's keys, the state indexes, the signatures tracked or untracked.
want_account(account)
if s.to and s.to ~= state then
  want_state(state)
  want_state(s.to)
end
if s.track then want(N.signature(account, s.track.sign_id)) end
if s.untrack then want(N.signature(account, s.untrack)) end
local wanted = wanting()
if wanted then return wanted end
if s.from then
  local ok = false
  for _, f in ipairs(s.from) do if f == state then ok = true end end
  if not ok then return {0, state, ''} end
end
-- A field every reader takes empty as absent is cleared by writing it empty, in the same HSET
-- as the rest (an HDEL fewer on the hot path); any other is deleted.
local EMPTY_IS_ABSENT = {error = true, uncertain = true, waiting_for = true}
local sets, dels = {}, {}
for k, v in pairs(s.set or {}) do
  local empty = v == cjson.null or v == ''
  if empty and not EMPTY_IS_ABSENT[k] then
    dels[#dels + 1] = k
  else
    sets[#sets + 1] = k
    sets[#sets + 1] = empty and '' or tostring(v)
  end
end
if s.retry_in then
  sets[#sets + 1] = 'run_at'
  sets[#sets + 1] = NOW + s.retry_in
end
if s.to then
  set_state(id, state, s.to, sets)
  -- Only a job waiting for a message belongs in the outbox (a run's start took it out); a
  -- retry re-enters it below.
  if s.to ~= 'queued' and (state == 'queued' or state == 'parked') then
    redis.call('ZREM', K.outbox(), id)
  end
elseif #sets > 0 then
  redis.call('HSET', jk, unpack(sets))
end
if s.retry_in then
  -- A retry later: its message is delayed in a worker's memory, and the outbox owns the job in
  -- case that memory is lost.
  outbox(id, NOW + s.retry_in + GRACE)
end
if #dels > 0 then redis.call('HDEL', jk, unpack(dels)) end
if s.stamp then redis.call('HSETNX', jk, s.stamp, NOW) end
-- Leaving 'submitting' cleared the lease already (set_state).
if s.lease_clear and not (s.to and s.to ~= state and state == 'submitting') then
  redis.call('ZREM', K.inflight(), id)
end
-- A running job is in no parked FIFO and no paused account's waiting set (it left them to
-- run), so only a job settled from elsewhere is looked for there.
if s.unpark and state ~= 'submitting' then
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
local flags = {false, false}
if s.unblock or s.proof then flags = redis.call('HMGET', acc, 'blocked', 'probing') end
-- Only the blocked head's own success clears the block: a create confirmed or adopted meanwhile
-- is not the job being probed.
if s.unblock and flags[1] == '1' and redis.call('GET', K.gate(account)) == id then
  redis.call('HSET', acc, 'blocked', '0', 'probes', 0)
  redis.call('ZREM', K.probes(), account)
  publish(s.unblock)
end
-- Probe mode: an unconfirmed create handed the gate on while its audit may be pending, so a
-- 50103 proves nothing about anyone else's submission until the API accepts one of the
-- account's submissions (the proof that nothing is pending then).
if s.probing then redis.call('HSET', acc, 'probing', '1') end
if s.proof and state == 'submitting' and (flags[2] or s.probing) then
  redis.call('HDEL', acc, 'probing')
end
local nxt = false
if s.release then nxt = release(account, id) end
if s.track then
  local sk = K.signature(account, s.track.sign_id)
  local args = {'since', NOW, 'status_at', NOW}
  for k, v in pairs(s.track.fields) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  redis.call('HSET', sk, unpack(args))
  local member = account .. ':' .. s.track.sign_id
  redis.call('ZADD', K.due(), NOW + s.track.due_in, member)
end
if s.untrack then
  local member = account .. ':' .. s.untrack
  redis.call('DEL', K.signature(account, s.untrack))
  redis.call('ZREM', K.due(), member)
end
if s.terminal then finish_job(id, account, s.terminal) end
if s.events then
  for _, event in ipairs(s.events) do publish(event) end
end
return {1, state, nxt or ''}
