-- Claim up to ARGV[4] due webhook deliveries: each moves ARGV[5] ms ahead, so a sender that
-- dies gives it back then (at least once: a receiver dedupes by webhook-id). Returns the ids.
local due = redis.call('ZRANGEBYSCORE', K.wh_due(), '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
if #due > 0 then
  local args = {}
  local later = NOW + tonumber(ARGV[5])
  for _, id in ipairs(due) do
    args[#args + 1] = later
    args[#args + 1] = id
  end
  redis.call('ZADD', K.wh_due(), unpack(args))
end
return due
