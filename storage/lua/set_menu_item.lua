-- Create or change one menu item and its stock, move the menu to its next version, and
-- announce the change to the terminals viewing this merchant.
-- Guarded by the menu's version, like an order: the host that wrote the change saw the
-- version before it. Returns the new version, or minus the current one when it moved.
-- KEYS: menu, stock, merchant   ARGV: item_id, item_json, stock, version, event, channel
local current = tonumber(redis.call('HGET', KEYS[3], 'menu_version') or '0')
if current + 1 ~= tonumber(ARGV[4]) then
  return -current
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], 'menu_version', ARGV[4])
redis.call('PUBLISH', ARGV[6], 'menu:' .. ARGV[4] .. ' ' .. ARGV[5])
return tonumber(ARGV[4])
