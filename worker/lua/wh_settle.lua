-- Record one delivery attempt and what follows, atomically. ARGV[4] delivery id, ARGV[5]
-- outcome (delivered, retry, dead, dropped), ARGV[6] retry delay ms, ARGV[7] attempt JSON,
-- ARGV[8] attempts kept per endpoint, ARGV[9] error, ARGV[10] dead retention ms, ARGV[11]
-- disable-after ms, ARGV[12] the endpoint-disabled event (JSON), ARGV[13] the hold of a claim
-- (ms): the next delivery, whose message the caller sends, is due again only after it.
-- A retry keeps the (endpoint, account) slot, so later events wait: order holds. Delivered,
-- dead or dropped pass the slot to the next delivery in the FIFO. A failure starts or extends
-- the endpoint's failing period; past ARGV[11] the endpoint is disabled and the event published.
-- Returns {outcome, next delivery id or '', 'disabled' or ''}, or the keys it wants declared.
local id, outcome = ARGV[4], ARGV[5]
local dk = K.wh_delivery(id)
local d = hgetall(dk)
if not d.endpoint or d.state ~= 'pending' then return {'stale', '', ''} end
local ep, account = d.endpoint, d.account
-- The plan: the endpoint's keys, the (endpoint, account) slot and FIFO, then the next delivery.
want(N.webhook(ep))
want(N.wh_attempts(ep))
want(N.wh_dead(ep))
want(N.wh_slot(ep, account))
want(N.wh_fifo(ep, account))
local wanted = wanting()
if wanted then return wanted end
if outcome ~= 'retry' then
  local head = redis.call('LINDEX', K.wh_fifo(ep, account), 0)
  if head then want(N.wh_delivery(head)) end
  wanted = wanting()
  if wanted then return wanted end
end
redis.call('DEL', K.wh_lock(id))
local epk = K.webhook(ep)
if ARGV[7] ~= '' then
  redis.call('LPUSH', K.wh_attempts(ep), ARGV[7])
  redis.call('LTRIM', K.wh_attempts(ep), 0, tonumber(ARGV[8]) - 1)
end
local disabled = ''
if outcome == 'delivered' then
  redis.call('HDEL', epk, 'failing_since')
elseif outcome ~= 'dropped' and redis.call('EXISTS', epk) == 1 then
  redis.call('HSETNX', epk, 'failing_since', NOW)
  local since = tonumber(redis.call('HGET', epk, 'failing_since'))
  if NOW - since > tonumber(ARGV[11]) and redis.call('HGET', epk, 'enabled') == '1' then
    redis.call('HSET', epk, 'enabled', '0', 'disabled_reason',
               'failing for longer than the disable period', 'disabled_at', NOW)
    publish(ARGV[12])
    disabled = 'disabled'
  end
end
redis.call('HINCRBY', dk, 'attempts', 1)
if outcome == 'retry' then
  local at = NOW + tonumber(ARGV[6])
  redis.call('ZADD', K.wh_due(), at, id)
  redis.call('HSET', dk, 'next_at', at, 'error', ARGV[9])
  return {'retry', '', disabled}
end
redis.call('ZREM', K.wh_due(), id)
if outcome == 'dead' then
  redis.call('HSET', dk, 'state', 'dead', 'dead_at', NOW, 'error', ARGV[9])
  redis.call('HDEL', dk, 'next_at')
  redis.call('PEXPIRE', dk, tonumber(ARGV[10]))
  redis.call('ZADD', K.wh_dead(ep), NOW, id)
else
  redis.call('DEL', dk)
end
return {outcome, wh_pass(ep, account, NOW + tonumber(ARGV[13])), disabled}
