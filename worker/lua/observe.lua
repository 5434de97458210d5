-- Apply an observed status to a tracked signature, compare-and-set: only a real change
-- publishes its event, once, whoever observed it (poll, callback, a redelivered message); an
-- audit that resolves finishes the job holding the gate and hands the gate on, in this step.
-- ARGV[4]: JSON {account, sign_id, status (absent: the signature is gone), use_status (absent:
--   unknown, as in a callback), reason,
--   retention, delays {pending_ms, max_ms, resolved_ms, jitter}, events {approved, rejected,
--   use_changed, gone}}. Returns {what, next job id or ''}, or the keys it wants declared.
local s = cjson.decode(ARGV[4])
local member = s.account .. ':' .. s.sign_id
local sk = K.signature(s.account, s.sign_id)
local rec = hgetall(sk)
if not rec.since then return {'untracked', ''} end
-- The plan: a final status finishes the job the record names, whose key the caller declares.
local final = s.status == nil or s.status == cjson.null or tostring(s.status) == '1'
    or tostring(s.status) == '2'
if final and rec.job_id and rec.job_id ~= '' then want(N.job(rec.job_id)) end
local wanted = wanting()
if wanted then return wanted end
if final and rec.job_id and rec.job_id ~= '' then
  local jstate = redis.call('HGET', K.job(rec.job_id), 'state')
  if jstate == 'pending_audit' or jstate == 'unconfirmed' then
    want_state(jstate)
    for _, to in ipairs({'approved', 'rejected', 'deleted'}) do want_state(to) end
  end
end
wanted = wanting()
if wanted then return wanted end
local nxt = ''
local reason = s.reason
if reason == cjson.null then reason = nil end

-- The event template gains what the record knows, spliced in as text: decoding and encoding it
-- again would pass its numbers (a long sign id) through Lua's doubles.
local function announce(template, previous)
  local extra = ''
  if previous ~= nil and previous ~= '' then
    extra = extra .. ',"previous_status":' .. cjson.encode(tonumber(previous))
  end
  if rec.job_id and rec.job_id ~= '' then extra = extra .. ',"job_id":' .. cjson.encode(rec.job_id) end
  if rec.sign and rec.sign ~= '' then extra = extra .. ',"sign":' .. cjson.encode(rec.sign) end
  local body = string.sub(template, 2, -2)
  if body == '' then extra = string.sub(extra, 2) end
  publish('{' .. body .. extra .. '}')
end

local function finish(to)
  local job = rec.job_id
  if not job or job == '' then return end
  local state = redis.call('HGET', K.job(job), 'state')
  if state ~= 'pending_audit' and state ~= 'unconfirmed' then return end
  set_state(job, state, to)
  redis.call('HDEL', K.job(job), 'waiting_for')
  if reason then redis.call('HSET', K.job(job), 'refuse_reason', reason) end
  nxt = release(s.account, job) or ''
  finish_job(job, s.account, s.retention)
  -- The last settled create of a probing account has resolved: nothing unknown is pending.
  if redis.call('HEXISTS', K.account(s.account), 'probing') == 1
      and redis.call('SCARD', K.unconfirmed(s.account)) == 0
      and redis.call('GET', K.gate(s.account)) ~= job then
    redis.call('HDEL', K.account(s.account), 'probing')
  end
  redis.call('HDEL', sk, 'job_id')
end

if s.status == nil or s.status == cjson.null then
  redis.call('DEL', sk)
  redis.call('ZREM', K.due(), member)
  announce(s.events.gone, rec.status)
  finish('deleted')
  return {'gone', nxt}
end

local what = 'same'
local status = tostring(s.status)
if rec.status ~= status then
  redis.call('HSET', sk, 'status', status, 'status_at', NOW, 'checks', 0)
  local known = rec.status ~= nil and rec.status ~= ''
  if status == '1' then
    if known then announce(s.events.approved, rec.status) end
    finish('approved')
  elseif status == '2' then
    if known then announce(s.events.rejected, rec.status) end
    finish('rejected')
  end
  what = known and 'changed' or 'first'
end
if status == '2' and reason then redis.call('HSET', sk, 'refuse_reason', reason) end
if s.is_default ~= nil and s.is_default ~= cjson.null then
  local default = s.is_default and '1' or '0'
  if rec.is_default ~= default then redis.call('HSET', sk, 'is_default', default) end
end
local use = s.use_status
if use == nil or use == cjson.null then use = rec.use_status else use = tostring(use) end
if use and rec.use_status ~= use then
  redis.call('HSET', sk, 'use_status', use, 'use_at', NOW)
  if rec.use_status ~= nil and rec.use_status ~= '' and what == 'same' then
    announce(s.events.use_changed, nil)
    what = 'changed'
  end
end

-- The next check: a pending audit soon, then less often up to a cap; a resolved one rarely.
local d = s.delays
redis.call('HSET', sk, 'checked_at', NOW)
local delay
if status == '0' then
  local checks = redis.call('HINCRBY', sk, 'checks', 1)
  delay = math.min(d.max_ms, d.pending_ms * 2 ^ (checks - 1))
else
  delay = d.resolved_ms
end
redis.call('ZADD', K.due(), NOW + math.floor(delay * d.jitter), member)
return {what, nxt}
