-- Keep a lease its holder still holds, or let it go (ttl_ms 0).
-- KEYS: the lease   ARGV: owner, ttl_ms
-- Returns 1 when the caller held it, 0 otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
