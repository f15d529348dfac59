-- A delivery is done: the rider carries the order no more, and counts one more today.
-- Once only: a second call for the same order (a follow-up applied again) changes nothing.
-- KEYS: rider, rider's orders (one rider's slot)
-- ARGV: order_id, today's delivered field ('' for an errand cancelled before pickup:
--       the rider is free again, with nothing delivered)
-- Returns the rider's zone, or false when the order was freed before.
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then
  return false
end
redis.call('HINCRBY', KEYS[1], 'load', -1)
if ARGV[2] ~= '' then
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
end
return redis.call('HGET', KEYS[1], 'zone')
