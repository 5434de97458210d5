-- Claim a job for execution: settled and duplicate deliveries end here; a paused account's job
-- waits; a submission must hold its account's gate; rate limits are taken; then a lease.
-- ARGV[4] job id, ARGV[5] lease length (ms), ARGV[6..9] global rate/burst, account rate/burst.
-- Wants the account's keys declared (its name is in the record).
local id = ARGV[4]
local jk = K.job(id)
local job = hgetall(jk)
local state = job.state
if not state then return {'missing'} end
local settled = TERMINAL[state] or state == 'pending_audit' or state == 'unconfirmed'
    or job.finished_at
want_account(job.account)
if not settled then
  want_state(state)
  want_state('parked')
end
local wanted = wanting()
if wanted then return wanted end
local gate = K.gate(job.account)
if settled then
  -- A settled job never needs a message: whatever sent this one leaves no outbox entry behind.
  redis.call('ZREM', K.outbox(), id)
  -- A job settled after the gate was handed to it (cancelled at the head of the FIFO) hands
  -- it on at once. Only a settled job's own holding: a pending audit keeps its gate.
  local nxt = ''
  if (TERMINAL[state] or job.finished_at) and redis.call('GET', gate) == id then
    nxt = promote(job.account) or ''
  end
  return {'settled', state, nxt}
end
-- Only a running job holds a lease: every way out of 'submitting' clears it.
if state == 'submitting' then
  local lease = redis.call('ZSCORE', K.inflight(), id)
  if lease and tonumber(lease) > NOW then return {'busy'} end
end
-- A parked job runs once the gate is handed to it (promote leaves its record as it was).
if state == 'parked' and job.waiting_for == 'gate' and redis.call('GET', gate) ~= id then
  return {'parked'}
end
-- A second message for a job rescheduled to later (the outbox's, or a redelivery) is dropped:
-- the outbox entry at the job's due time owns it. A second of slack for hosts' clocks.
if job.run_at and tonumber(job.run_at) > NOW + 1000 then return {'early', job.run_at} end
redis.call('ZREM', K.outbox(), id)
local account = hgetall(K.account(job.account))
if not account.app_key then return {'no_account'} end
if account.status == 'paused' then
  redis.call('SADD', K.waiting(job.account), id)
  set_state(id, state, 'parked', {'waiting_for', 'account_paused'})
  redis.call('ZREM', K.inflight(), id)
  return {'paused'}
end
if job.gate == '1' and acquire_or_park(job.account, id, 0, false) ~= 'acquired' then
  set_state(id, state, 'parked', {'waiting_for', 'gate'})
  return {'parked'}
end

local wait = throttle(job.account, ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if wait > 0 then
  redis.call('HSET', jk, 'run_at', NOW + wait)
  outbox(id, NOW + wait + GRACE)
  return {'throttled', tostring(wait)}
end

redis.call('ZADD', K.inflight(), NOW + tonumber(ARGV[5]), id)
if job.run_at then redis.call('HDEL', jk, 'run_at') end
local fields = {'attempts', (tonumber(job.attempts) or 0) + 1, 'attempt_at', NOW}
-- A job the gate was handed to stops waiting for it (empty reads as absent; see apply.lua).
if job.waiting_for == 'gate' then
  fields[5] = 'waiting_for'
  fields[6] = ''
end
set_state(id, state, 'submitting', fields)
return {'run', state, account.app_key, account.secret or '', cjson.encode(job), tostring(NOW),
        account.probing or ''}
