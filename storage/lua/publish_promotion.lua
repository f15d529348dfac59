-- Publish a promotion: its record, its push in the queue, its place in each cell's
-- active promotions; all in the `{promo}` slot. A promotion id is published once.
-- KEYS[1]: record, KEYS[2]: the queue of pushes, KEYS[3..]: the cells' promotions
-- ARGV: promotion id, record json, due_ms, ends_ms, keep_until_ms, now_ms, targeted
-- Returns 1 when published, 0 when the id was published before.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'cell', 0, 'scan', '0', 'targeted', ARGV[7],
  'pushed', 0, 'examined', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
for k = 3, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', '(' .. ARGV[6])
  redis.call('ZADD', KEYS[k], ARGV[4], ARGV[1])
  -- A cell's index lives as long as its last promotion.
  local ttl = redis.call('PTTL', KEYS[k])
  if ttl >= 0 and tonumber(ARGV[6]) + ttl < tonumber(ARGV[4]) or ttl == -1 then
    redis.call('PEXPIREAT', KEYS[k], ARGV[4])
  end
end
return 1
