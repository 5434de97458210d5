-- One delivery of an event to one endpoint outside the stream's fan-out (a test event, a
-- replay): ARGV[4] delivery id, ARGV[5] endpoint, ARGV[6] account, ARGV[7] event id,
-- ARGV[8] stream id ('' for none), ARGV[9] body. It waits its turn behind the account's other
-- deliveries to that endpoint. Returns 1, or 0 when the endpoint does not exist.
if redis.call('EXISTS', K.webhook(ARGV[5])) == 0 then return 0 end
wh_enqueue(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return 1
