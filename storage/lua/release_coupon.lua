-- Give a claimed coupon use back (order failed, cancelled or expired).
-- KEYS: coupon, claims   ARGV: customer_id
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if used <= 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
redis.call('HINCRBY', KEYS[1], 'remaining', 1)
return 1
