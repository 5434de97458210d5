-- Renew the in-flight leases of jobs still running in one process, on Redis's clock.
-- ARGV[4] lease length (ms), ARGV[5..] job ids. A lease the reaper already took stays gone.
local deadline = NOW + tonumber(ARGV[4])
for i = 5, #ARGV do redis.call('ZADD', K.inflight(), 'XX', deadline, ARGV[i]) end
return #ARGV - 4
