-- Take or renew the scheduler lease: held by ARGV[4] (this node) for ARGV[5] ms. Returns 1
-- while this node leads, else 0.
local key = K.leader()
if redis.call('GET', key) == ARGV[4] then
  redis.call('PEXPIRE', key, ARGV[5])
  return 1
end
return redis.call('SET', key, ARGV[4], 'NX', 'PX', ARGV[5]) and 1 or 0
