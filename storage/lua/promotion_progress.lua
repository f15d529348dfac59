-- Record how far a promotion's push has got, only for the holder of the pusher's lease
-- (a pusher that lost it while it worked must not move the cursor of the next one).
-- KEYS: the lease, the promotion's record, the queue of pushes
-- ARGV: owner, promotion id, cell index, scan cursor, examined, pushed, finished status
--       ('' while it goes on), now (RFC 3339)
-- Returns 1 when recorded, 0 when the caller does not hold the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[2])
  return 1
end
redis.call('HSET', KEYS[2], 'cell', ARGV[3], 'scan', ARGV[4])
redis.call('HSETNX', KEYS[2], 'started_at', ARGV[8])
redis.call('HINCRBY', KEYS[2], 'examined', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'pushed', ARGV[6])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'finished', ARGV[7], 'finished_at', ARGV[8])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return 1
