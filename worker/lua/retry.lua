-- Reopen a failed or cancelled job: its record and key kept again, its attempts reset, and for a
-- submission the account's gate taken or the job parked. ARGV[4] job id. Returns {state, before}.
local id = ARGV[4]
local jk = K.job(id)
local state = redis.call('HGET', jk, 'state')
if state ~= 'failed' and state ~= 'cancelled' then return {'refused', state or ''} end
local account = redis.call('HGET', jk, 'account')
want_account(account)
want_state(state)
want_state('queued')
want_state('parked')
local wanted = wanting()
if wanted then return wanted end
redis.call('PERSIST', jk)
local key = redis.call('HGET', jk, 'key')
if key and key ~= '' then
  redis.call('HDEL', K.idem(account), 'exp:' .. key)
  redis.call('ZREM', K.idem_expiry(account), key)
end
redis.call('HDEL', jk, 'finished_at', 'error', 'first_failure_at', 'uncertain', 'uncertain_since',
           'waiting_for')
redis.call('HSET', jk, 'attempts', 0)
local to = 'queued'
if redis.call('HGET', jk, 'gate') == '1' and acquire_or_park(account, id, 0, false) == 'parked' then
  to = 'parked'
  redis.call('HSET', jk, 'waiting_for', 'gate')
end
set_state(id, state, to)
if to == 'queued' then outbox(id, NOW + GRACE) end
return {to, state}
