-- Messages were sent for these jobs: each outbox entry moves to the redelivery deadline, when
-- the reaper sends another message if the job's run still has not started (the first may have
-- been lost with a worker's memory on a reconnect). ARGV[4] redelivery delay (ms), ARGV[5..] ids.
-- A bulk submission's batch is one ZADD, not one per job.
return rescore(K.outbox(), NOW + tonumber(ARGV[4]), 5)
