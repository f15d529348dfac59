-- A kind's host layout: its host count and pinned shards, changed in one step, with
-- the epoch bumped on every change so that each host can say which layout it has
-- handed over under (`storage/layout.py`).
-- KEYS[1] the kind's layout hash
-- ARGV[1] host count, ARGV[2] pins (canonical JSON), ARGV[3] "keep" to leave a layout
-- that exists as it is (a deployment that did not ask for a count)
local count = redis.call('HGET', KEYS[1], 'count')
local pins = redis.call('HGET', KEYS[1], 'pins') or '{}'
if count and (ARGV[3] == 'keep' or (count == ARGV[1] and pins == ARGV[2])) then
  return redis.call('HMGET', KEYS[1], 'count', 'epoch', 'previous', 'pins')
end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') + 1
local previous = count or ARGV[1]
redis.call('HSET', KEYS[1], 'count', ARGV[1], 'epoch', epoch, 'previous', previous, 'pins', ARGV[2])
return {ARGV[1], tostring(epoch), previous, ARGV[2]}
