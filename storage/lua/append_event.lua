-- Append one event to several inbox streams, trimmed by length and age, and announce it.
-- KEYS: inbox streams   ARGV: maxlen, retention_ms, event_json
local now = redis.call('TIME')
local min_id = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[2]))
for k = 1, #KEYS do
  local id = redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[3])
  redis.call('XTRIM', KEYS[k], 'MINID', '~', min_id)
  redis.call('PUBLISH', 'notify:' .. KEYS[k], id .. ' ' .. ARGV[3])
end
return #KEYS
