-- Fan the events stream out to webhook deliveries, atomically: the events after the cursor
-- (at most ARGV[4]) each become one delivery per enabled endpoint whose filters match and that
-- existed before the event; the cursor moves past them in the same step, so no event is fanned
-- out twice or skipped. Deliveries of one account to one endpoint go one at a time, in stream
-- order: the first takes the (endpoint, account) slot and is due now, the rest wait in a FIFO.
-- With no endpoint the cursor just follows the stream (a new endpoint gets no history).
-- Returns {events read, deliveries made, deliveries due now}.
-- ARGV[5]: the last stream id to fan out this time (the stream's tail when the caller began),
-- so that the keys a run asks for stay the ones the next run needs.
local function due_now() return redis.call('ZCOUNT', K.wh_due(), '-inf', NOW) end
local ids = redis.call('SMEMBERS', K.webhooks())
if #ids == 0 then
  local last = redis.call('XREVRANGE', K.events(), '+', '-', 'COUNT', 1)
  if #last > 0 and redis.call('GET', K.wh_cursor()) ~= last[1][1] then
    redis.call('SET', K.wh_cursor(), last[1][1])
  end
  return {0, 0, due_now()}
end
-- The plan, first: every endpoint's record.
for _, id in ipairs(ids) do want(N.webhook(id)) end
local wanted = wanting()
if wanted then return wanted end

local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am > bm end
  return as > bs
end

local endpoints = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', K.webhook(id), 'enabled', 'types', 'accounts', 'since')
  if f[1] == '1' then
    local ep = {id = id, since = f[4] or '0-0', types = {}, accounts = {}, any_type = true,
                any_account = true}
    for _, t in ipairs(cjson.decode(f[2] or '[]')) do ep.types[t] = true; ep.any_type = false end
    for _, a in ipairs(cjson.decode(f[3] or '[]')) do
      ep.accounts[a] = true; ep.any_account = false
    end
    endpoints[#endpoints + 1] = ep
  end
end

local cursor = redis.call('GET', K.wh_cursor()) or '0-0'
local entries = redis.call('XRANGE', K.events(), '(' .. cursor, ARGV[5], 'COUNT', tonumber(ARGV[4]))
-- Then the plan's second part: each delivery's record, slot and FIFO; the writes after it.
local deliveries = {}
for _, entry in ipairs(entries) do
  local sid, fields = entry[1], entry[2]
  local raw
  for i = 1, #fields, 2 do if fields[i] == 'event' then raw = fields[i + 1] end end
  local ok, ev = pcall(cjson.decode, raw or '')
  if ok and type(ev) == 'table' then
    local account = type(ev.account) == 'string' and ev.account or ''
    for _, ep in ipairs(endpoints) do
      if after(sid, ep.since) and (ep.any_type or ep.types[ev.type])
          and (ep.any_account or ep.accounts[account]) then
        local id = ep.id .. ':' .. sid
        want(N.wh_delivery(id))
        want(N.wh_slot(ep.id, account))
        want(N.wh_fifo(ep.id, account))
        deliveries[#deliveries + 1] = {id, ep.id, account, tostring(ev.id or sid), sid, raw}
      end
    end
  end
  cursor = sid
end
wanted = wanting()
if wanted then return wanted end
for _, d in ipairs(deliveries) do wh_enqueue(d[1], d[2], d[3], d[4], d[5], d[6]) end
if #entries > 0 then redis.call('SET', K.wh_cursor(), cursor) end
return {#entries, #deliveries, due_now()}
