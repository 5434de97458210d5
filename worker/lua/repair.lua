-- Repair one account's gate: a holder that is gone or finished is released, and a free gate
-- with jobs parked behind it is handed to the head. ARGV[4] account. Returns {what, next job},
-- or the holder's record wanted declared.
local account = ARGV[4]
local holder = redis.call('GET', K.gate(account))
if holder then
  want(N.job(holder))
  local wanted = wanting()
  if wanted then return wanted end
  local state = redis.call('HGET', K.job(holder), 'state')
  if not state or TERMINAL[state] then return {'released', promote(account) or ''} end
  -- A head waiting on an external audit always has a probe coming.
  if state == 'parked' and redis.call('HGET', K.job(holder), 'waiting_for') == 'external_audit'
      and redis.call('ZSCORE', K.probes(), account) == false then
    redis.call('ZADD', K.probes(), NOW, account)
    return {'reprobed', ''}
  end
  return {'ok', ''}
end
if redis.call('LLEN', K.parked(account)) > 0 then return {'promoted', promote(account) or ''} end
return {'ok', ''}
