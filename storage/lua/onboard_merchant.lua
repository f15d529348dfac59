-- Onboard a merchant in one step: its profile and its place in the city's indexes, or
-- nothing when the id is taken. The caller checked the location before (a GEO index
-- refuses latitudes beyond +-85.05 and a failing command would leave the rest written).
-- KEYS: merchant, merchant GEO set, max reach zset, merchants version
-- ARGV: profile_json, lng, lat, merchant_id, reach_m
if redis.call('HEXISTS', KEYS[1], 'profile') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'profile', ARGV[1], 'menu_version', 0)
redis.call('GEOADD', KEYS[2], ARGV[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('INCR', KEYS[4])
return 1
