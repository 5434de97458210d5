-- Renew the in-flight leases of jobs still running in one process, on Redis's clock.
-- ARGV[4] lease length (ms), ARGV[5..] job ids. A lease the reaper already took stays gone.
return rescore(K.inflight(), NOW + tonumber(ARGV[4]), 5)
