-- One reaper pass's moves, atomic so that a pass killed at any point loses nothing: expired
-- leases (their process died) and due probes (the head job of an externally blocked account)
-- go into the outbox due now; then the outbox entries that are due are returned to be sent.
-- The caller sends them and reschedules them (sent.lua); a pass that dies first leaves them
-- due, and the next pass sends them. ARGV[4] batch size.
-- Returns {expired leases, probes, job id...}, or the gates it wants declared.
local batch = tonumber(ARGV[4])
-- The plan: the gate of each account a probe is due for (the gate names the job to run).
local probes = redis.call('ZRANGEBYSCORE', K.probes(), '-inf', NOW, 'LIMIT', 0, batch)
for _, account in ipairs(probes) do want(N.gate(account)) end
local wanted = wanting()
if wanted then return wanted end
local expired = redis.call('ZRANGEBYSCORE', K.inflight(), '-inf', NOW, 'LIMIT', 0, batch)
for _, id in ipairs(expired) do
  redis.call('ZREM', K.inflight(), id)
  outbox(id, NOW)
end
local probed = 0
for _, account in ipairs(probes) do
  redis.call('ZREM', K.probes(), account)
  local head = redis.call('GET', K.gate(account))
  if head then
    outbox(head, NOW)
    probed = probed + 1
  end
end
local due = redis.call('ZRANGEBYSCORE', K.outbox(), '-inf', NOW, 'LIMIT', 0, batch)
local reply = {#expired, probed}
for _, id in ipairs(due) do reply[#reply + 1] = id end
return reply
