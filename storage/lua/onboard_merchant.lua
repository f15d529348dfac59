-- Onboard a merchant in one step: its profile, and its place in the city's indexes (in
-- the index's own slot) as the outbox entry relayed next; or nothing when the id is
-- taken. The caller checked the location before (a GEO index refuses latitudes beyond
-- +-85.05, and the relay must not fail).
-- KEYS: merchant, the merchant shard's outbox   ARGV: profile_json, outbox entry
if redis.call('HEXISTS', KEYS[1], 'profile') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'profile', ARGV[1], 'menu_version', 0)
redis.call('XADD', KEYS[2], '*', 'x', ARGV[2])
return 1
