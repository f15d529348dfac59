-- Shared by every script that publishes an event: append it to inbox streams, each
-- trimmed by length and by age, and announce it on the stream's channel as
-- "<stream id> <event json>" for the replicas' fan-in readers.
local function append_to_inboxes(first, maxlen, retention_ms, event, channel_prefix)
  local now = redis.call('TIME')
  local min_id = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    - tonumber(retention_ms))
  for k = first, #KEYS do
    local id = redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', 'e', event)
    redis.call('XTRIM', KEYS[k], 'MINID', '~', min_id)
    redis.call('PUBLISH', channel_prefix .. KEYS[k], id .. ' ' .. event)
  end
  return #KEYS - first + 1
end
