-- Claim one use of a coupon for a customer, or say why not.
-- KEYS: coupon, claims   ARGV: customer_id
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '-1')
if remaining < 0 then return 'unknown' end
if remaining == 0 then return 'sold_out' end
local limit = tonumber(redis.call('HGET', KEYS[1], 'per_customer_limit') or '1')
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if used >= limit then return 'limit_reached' end
redis.call('HINCRBY', KEYS[1], 'remaining', -1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 'ok'
