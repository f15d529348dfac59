-- Create or change one menu item and its stock, bump the menu version, and announce the
-- change to the terminals viewing this merchant (`notify:menu:<merchant>`).
-- KEYS: menu, stock, merchant   ARGV: item_id, item_json, stock, merchant_id, at
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local version = redis.call('HINCRBY', KEYS[3], 'menu_version', 1)
local item = cjson.decode(ARGV[2])
item['stock'] = tonumber(ARGV[3])
local event = cjson.encode({
  cursor = cjson.null, type = 'menu_changed', order_id = cjson.null, version = version,
  at = ARGV[5], data = {merchant_id = ARGV[4], menu_version = version, item = item}
})
redis.call('PUBLISH', 'notify:menu:' .. ARGV[4], 'menu:' .. version .. ' ' .. event)
return version
