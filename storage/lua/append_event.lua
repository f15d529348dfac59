-- Append one event to several inbox streams and announce it.
-- KEYS: inbox streams   ARGV: maxlen, retention_ms, event_json, channel prefix
-- include: append_to_inboxes
return append_to_inboxes(1, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
