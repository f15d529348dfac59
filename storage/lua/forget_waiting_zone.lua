-- Drop a zone from the zones with waiting orders, unless an order waits there again.
-- KEYS[1]: the zone's waiting orders; KEYS[2]: the zones with waiting orders.
-- ARGV[1]: the zone. Returns 1 when the zone was dropped.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
