-- Shared by every script that publishes an event: append it to an inbox stream, trimmed
-- by length and by age, and announce it on the stream's channel as
-- "<stream id> <event json>" for the replicas' fan-in readers.
local function append_to_inbox(key, maxlen, retention_ms, event, channel_prefix)
  local now = redis.call('TIME')
  local min_id = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    - tonumber(retention_ms))
  local id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'e', event)
  redis.call('XTRIM', key, 'MINID', '~', min_id)
  redis.call('PUBLISH', channel_prefix .. key, id .. ' ' .. event)
  return id
end

local function append_to_inboxes(first, maxlen, retention_ms, event, channel_prefix)
  for k = first, #KEYS do
    append_to_inbox(KEYS[k], maxlen, retention_ms, event, channel_prefix)
  end
  return #KEYS - first + 1
end
