-- Give the scheduler lease up at once if ARGV[4] (this node) holds it, so a standby need not
-- wait for it to run out. Returns 1 when it was this node's.
if redis.call('GET', K.leader()) == ARGV[4] then return redis.call('DEL', K.leader()) end
return 0
