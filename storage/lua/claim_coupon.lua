-- Claim one use of a coupon for a customer's order, or say why not.
-- An order holds at most one use: claiming again for it is a no-op.
-- KEYS: coupon, claims, orders holding a use   ARGV: customer_id, order_id
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return 'ok' end
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '-1')
if remaining < 0 then return 'unknown' end
if remaining == 0 then return 'sold_out' end
local limit = tonumber(redis.call('HGET', KEYS[1], 'per_customer_limit') or '1')
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if used >= limit then return 'limit_reached' end
redis.call('HINCRBY', KEYS[1], 'remaining', -1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('SADD', KEYS[3], ARGV[2])
return 'ok'
