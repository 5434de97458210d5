-- Claim up to ARGV[4] due signatures for polling: their next check moves ARGV[5] ms ahead so
-- no other tick takes them meanwhile (a poller that dies gives them back then); the poll itself
-- sets the real next check. Returns the members ("account:sign_id").
local due = redis.call('ZRANGEBYSCORE', K.due(), '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
if #due > 0 then
  local args = {}
  local later = NOW + tonumber(ARGV[5])
  for _, member in ipairs(due) do
    args[#args + 1] = later
    args[#args + 1] = member
  end
  redis.call('ZADD', K.due(), unpack(args))
end
return due
