-- Claim up to ARGV[4] due signatures for polling: their next check moves ARGV[5] ms ahead so
-- no other tick takes them meanwhile (a poller that dies gives them back then); the poll itself
-- sets the real next check. Returns the time now, then member, due time, member, due time, ...
local due = redis.call('ZRANGEBYSCORE', K.due(), '-inf', NOW, 'WITHSCORES', 'LIMIT', 0,
                      tonumber(ARGV[4]))
if #due > 0 then
  local args = {}
  local later = NOW + tonumber(ARGV[5])
  for i = 1, #due, 2 do
    args[#args + 1] = later
    args[#args + 1] = due[i]
  end
  redis.call('ZADD', K.due(), unpack(args))
end
table.insert(due, 1, tostring(NOW))
return due
