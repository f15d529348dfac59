-- One change of a customer's address book and its events on the customer's inbox:
-- all or nothing, guarded by the book's version. Every key is in the customer's slot
-- ({c:<id>}, storage/keys.py), so every device of the customer hears of the change in
-- the same step that makes it.
-- KEYS: book, inbox
-- ARGV: expected_version, new_version, book_json, maxlen, retention_ms, channel prefix,
--       event_json*
-- include: append_to_inboxes
local book_key = KEYS[1]
local current = tonumber(redis.call('HGET', book_key, 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return {'stale_version', tostring(current)}
end
redis.call('HSET', book_key, 'json', ARGV[3], 'version', ARGV[2])
for k = 7, #ARGV do
  append_to_inbox(KEYS[2], ARGV[4], ARGV[5], ARGV[k], ARGV[6])
end
return {'ok'}
