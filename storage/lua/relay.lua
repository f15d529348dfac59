-- Apply one outbox entry's writes in this slot, once: an outbox is relayed in order, so
-- an entry at or before the last one applied here from the same outbox was applied.
-- KEYS[1]: this slot's relay marks; KEYS[2..]: the keys the writes touch
-- ARGV: outbox, entry id, writes json, event json, inbox maxlen, retention_ms,
--       channel prefix, bell prefix
-- A write is [command, key index, args...] with the key index into KEYS; two are ours:
-- ["TELL", k] appends the event to inbox k, ["POST", k, message] adds a mailbox entry
-- and rings the mailbox's bell.
-- include: append_to_inboxes
local last = redis.call('HGET', KEYS[1], ARGV[1])
if last then
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  local ems, eseq = string.match(ARGV[2], '^(%d+)-(%d+)$')
  lms, lseq, ems, eseq = tonumber(lms), tonumber(lseq), tonumber(ems), tonumber(eseq)
  if ems < lms or (ems == lms and eseq <= lseq) then
    return 0
  end
end
for _, write in ipairs(cjson.decode(ARGV[3])) do
  local command, key = write[1], KEYS[write[2]]
  if command == 'TELL' then
    append_to_inbox(key, ARGV[5], ARGV[6], ARGV[4], ARGV[7])
  elseif command == 'POST' then
    redis.call('XADD', key, '*', 'm', write[3])
    redis.call('PUBLISH', ARGV[8] .. key, '1')
  else
    redis.call(command, key, unpack(write, 3))
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
