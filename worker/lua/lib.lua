-- Shared by every signq script. ARGV[1] is the key prefix (P, used by the K builders),
-- ARGV[2] the events stream's approximate MAXLEN, ARGV[3] the outbox grace in ms.
-- Every key a script touches is declared in KEYS (``K.name`` fails on any other). A key a
-- script can only name once it runs (a job named in a record) is asked for instead: the
-- script's plan, before any write, calls ``want(N.name(...))`` for each, and ``wanting()``
-- returns them to the caller, which runs the script again with them declared.
-- NOW is Redis's clock, the one clock every process shares: no host's clock sets a deadline
-- that another host compares.
local CLOCK = redis.call('TIME')
local NOW = tonumber(CLOCK[1]) * 1000 + math.floor(tonumber(CLOCK[2]) / 1000)
local MAXLEN = ARGV[2]
local GRACE = tonumber(ARGV[3])
local TERMINAL = {approved = true, rejected = true, deleted = true, failed = true, cancelled = true}

local WANTED = {}
local function want(name)
  if not DECLARED[name] and not WANTED[name] then
    WANTED[name] = true
    WANTED[#WANTED + 1] = name
  end
end
local function wanting()
  if #WANTED == 0 then return nil end
  local reply = {'__want'}
  for _, name in ipairs(WANTED) do reply[#reply + 1] = name end
  return reply
end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- A job's state (and, in the same HSET, any ``extra`` field-value pairs the caller writes).
local function set_state(id, old, new, extra)
  local jk = K.job(id)
  local args = {'updated_at', NOW}
  if old ~= new then
    args[3] = 'state'
    args[4] = new
  end
  for _, v in ipairs(extra or {}) do args[#args + 1] = v end
  redis.call('HSET', jk, unpack(args))
  if old == new then return end
  -- A running job's index is its lease (the in-flight set, scored by the lease's deadline:
  -- start writes it), so entering 'submitting' costs no index write and leaving it clears the
  -- lease.
  if old == 'submitting' then
    redis.call('ZREM', K.inflight(), id)
  elseif old then
    redis.call('ZREM', K.jobs_by_state(old), id)
  end
  if new ~= 'submitting' then redis.call('ZADD', K.jobs_by_state(new), NOW, id) end
  -- An account's unconfirmed creates, for a callback or a late answer to settle by sign id.
  if old == 'unconfirmed' or new == 'unconfirmed' then
    local key = K.unconfirmed(redis.call('HGET', jk, 'account'))
    if new == 'unconfirmed' then redis.call('SADD', key, id) else redis.call('SREM', key, id) end
  end
end

-- The outbox owns every job that must get a message: its score is when the reaper sends one
-- if nothing has started the job by then (its own sender, a delayed retry) — so no job waits
-- only on a message held in some worker's memory.
local function outbox(id, at)
  redis.call('ZADD', K.outbox(), at, id)
end

-- Move the members ARGV[from..] that are in a sorted set to one score (ZADD XX: a member gone
-- meanwhile stays gone), one command per 500 of them. Returns how many were given.
local function rescore(key, score, from)
  local args = {}
  for i = from, #ARGV do
    args[#args + 1] = score
    args[#args + 1] = ARGV[i]
    if #args == 1000 or i == #ARGV then
      redis.call('ZADD', key, 'XX', unpack(args))
      args = {}
    end
  end
  return math.max(0, #ARGV - from + 1)
end

local function publish(event)
  redis.call('XADD', K.events(), 'MAXLEN', '~', MAXLEN, '*', 'event', event)
  redis.call('PUBLISH', K.events(), event)
end

-- Every per-account key a script may touch: a script that learns an account from a record
-- asks for them all at once (see plan below).
local function want_account(account)
  want(N.account(account))
  want(N.gate(account))
  want(N.parked(account))
  want(N.waiting(account))
  want(N.unconfirmed(account))
  want(N.idem(account))
  want(N.idem_expiry(account))
  want(N.bucket(account))
  want(N.jobs_by_account(account))
end

-- The index of a state a script moves a job into or out of ('submitting' has none of its own:
-- a running job's lease is its index).
local function want_state(state)
  if state ~= 'submitting' then want(N.jobs_by_state(state)) end
end

-- Hand the account's gate to the first job in its FIFO; it enters the outbox and the caller
-- sends its message. The job's own record is not touched here (its key is one only the FIFO
-- names, so a script could not declare it): it stays 'parked' until its run starts, which
-- sees that it holds the gate; a job settled meanwhile hands the gate on at its start. With
-- nobody parked, the gate is freed. Returns the job id or false.
local function promote(account)
  local nxt = redis.call('LPOP', K.parked(account))
  if not nxt then
    redis.call('DEL', K.gate(account))
    redis.call('SREM', K.gates(), account)
    return false
  end
  redis.call('SET', K.gate(account), nxt)
  redis.call('SADD', K.gates(), account)
  outbox(nxt, NOW + GRACE)
  return nxt
end

-- Release the gate if this job holds it, handing it on. Returns the next job id or false.
local function release(account, id)
  if redis.call('GET', K.gate(account)) ~= id then return false end
  return promote(account)
end

-- A job that is over: off every schedule, its record and idempotency key kept for the
-- retention, its content key freed for a new identical create. The account's idempotency
-- hash drops up to two expired keys each time, so it holds only the live ones and those
-- finished within the retention.
local function finish_job(id, account, retention)
  local jk = K.job(id)
  redis.call('HSET', jk, 'finished_at', NOW)
  redis.call('ZREM', K.inflight(), id)
  redis.call('ZREM', K.outbox(), id)
  redis.call('SREM', K.unconfirmed(account), id)
  redis.call('HDEL', jk, 'run_at')
  redis.call('PEXPIRE', jk, retention)
  local f = redis.call('HMGET', jk, 'key', 'content')
  local idem, expiry = K.idem(account), K.idem_expiry(account)
  if f[1] and f[1] ~= '' then
    redis.call('HSET', idem, 'exp:' .. f[1], NOW + retention)
    redis.call('ZADD', expiry, NOW + retention, f[1])
  end
  if f[2] and f[2] ~= '' and redis.call('HGET', idem, 'content:' .. f[2]) == id then
    redis.call('HDEL', idem, 'content:' .. f[2])
  end
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', NOW, 'LIMIT', 0, 2)) do
    redis.call('HDEL', idem, 'key:' .. old, 'exp:' .. old)
    redis.call('ZREM', expiry, old)
  end
end

-- 'acquired' when the job holds the gate, 'parked' when it waits in the FIFO, 'full' when the
-- FIFO is at its cap (0: no cap). A fresh job cannot be in the FIFO yet, so no scan for it.
local function acquire_or_park(account, id, cap, fresh)
  local holder = redis.call('GET', K.gate(account))
  if holder == id then return 'acquired' end
  local parked = K.parked(account)
  if not holder and redis.call('LLEN', parked) > 0 then
    -- A free gate with jobs parked behind it (an operator's hand, or a repair): FIFO first.
    holder = promote(account)
  end
  if not holder then
    redis.call('SET', K.gate(account), id)
    redis.call('SADD', K.gates(), account)
    return 'acquired'
  end
  if not fresh and redis.call('LPOS', parked, id) then return 'parked' end
  if cap > 0 and redis.call('LLEN', parked) >= cap then return 'full' end
  redis.call('RPUSH', parked, id)
  return 'parked'
end

-- Token buckets: tokens refill at rate per second up to burst; a request takes one. Returns 0
-- when both the global and the account's bucket had a token (both taken), else the ms to wait.
-- A bucket is one string, "tokens ts", that expires once it would be full again: one GET to
-- read it and one SET to take from it.
local function bucket(key, rate, burst)
  if rate <= 0 then return 0, 0 end
  local tokens, ts = burst, NOW
  local stored = redis.call('GET', key)
  if stored then
    local t, at = string.match(stored, '^(%S+) (%S+)$')
    tokens, ts = tonumber(t) or burst, tonumber(at) or NOW
  end
  tokens = math.min(burst, tokens + math.max(0, NOW - ts) * rate / 1000)
  if tokens >= 1 then return 0, tokens end
  return math.ceil((1 - tokens) * 1000 / rate), tokens
end

local function take(key, tokens, rate, burst)
  if rate <= 0 then return end
  redis.call('SET', key, tostring(tokens - 1) .. ' ' .. NOW, 'PX',
             math.ceil(burst * 1000 / rate) + 1000)
end

local function throttle(account, grate, gburst, arate, aburst)
  grate, gburst, arate, aburst = tonumber(grate), tonumber(gburst), tonumber(arate), tonumber(aburst)
  local gwait, gtokens = bucket(K.bucket('*'), grate, gburst)
  local await, atokens = bucket(K.bucket(account), arate, aburst)
  if gwait > 0 or await > 0 then return math.max(gwait, await) end
  take(K.bucket('*'), gtokens, grate, gburst)
  take(K.bucket(account), atokens, arate, aburst)
  return 0
end

-- A webhook delivery waits its turn: the first of an (endpoint, account) takes the slot and
-- is due now; the others queue behind it, in order.
local function wh_enqueue(id, endpoint, account, event_id, stream_id, body)
  redis.call('HSET', K.wh_delivery(id), 'endpoint', endpoint, 'account', account,
             'event_id', event_id, 'stream_id', stream_id, 'body', body, 'attempts', 0,
             'created_at', NOW)
  local slot = K.wh_slot(endpoint, account)
  if redis.call('SET', slot, id, 'NX') then
    redis.call('HSET', K.wh_delivery(id), 'state', 'pending')
    redis.call('ZADD', K.wh_due(), NOW, id)
  else
    redis.call('HSET', K.wh_delivery(id), 'state', 'queued')
    redis.call('RPUSH', K.wh_fifo(endpoint, account), id)
  end
end

-- The (endpoint, account) slot passes to the next waiting delivery, or is freed (the caller
-- planned the next one's key: ``want(N.wh_delivery(LINDEX of the FIFO))``). The caller
-- sends its message at once, so it is due only at ``at`` (a claim's hold): if that message is
-- lost, the scheduler sends another then, and never a second one meanwhile.
local function wh_pass(endpoint, account, at)
  local nxt = redis.call('LPOP', K.wh_fifo(endpoint, account))
  if not nxt then
    redis.call('DEL', K.wh_slot(endpoint, account))
    return ''
  end
  redis.call('SET', K.wh_slot(endpoint, account), nxt)
  redis.call('HSET', K.wh_delivery(nxt), 'state', 'pending')
  redis.call('ZADD', K.wh_due(), at, nxt)
  return nxt
end
