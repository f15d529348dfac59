-- Give an order's use of a coupon back (the order failed, was cancelled or rejected).
-- Once only: an order that holds no use gives nothing back.
-- KEYS: coupon, claims, orders holding a use   ARGV: customer_id, order_id
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return 0 end
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if used <= 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
redis.call('HINCRBY', KEYS[1], 'remaining', 1)
return 1
