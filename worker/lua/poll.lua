-- Before polling one signature: the account's credentials and a rate-limit token.
-- ARGV[4] account, ARGV[5..8] global rate/burst, account rate/burst.
-- Returns {'run', app_key, secret} | {'paused'} | {'throttled', ms} | {'no_account'}.
local account = hgetall(K.account(ARGV[4]))
if not account.app_key then return {'no_account'} end
if account.status == 'paused' then return {'paused'} end
local wait = throttle(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if wait > 0 then return {'throttled', tostring(wait)} end
return {'run', account.app_key, account.secret or ''}
