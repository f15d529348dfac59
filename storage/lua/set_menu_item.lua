-- Create or change one menu item and its stock, bump the menu version.
-- KEYS: menu, stock, merchant   ARGV: item_id, item_json, stock
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return redis.call('HINCRBY', KEYS[3], 'menu_version', 1)
