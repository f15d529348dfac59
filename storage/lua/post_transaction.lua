-- Post one ledger transaction exactly once, with the record of the business fact it
-- books (a payment record), in one step. Postings are never changed or deleted.
-- A new transaction also raises the counters that must agree with the ledger (a
-- merchant's monthly volume, which picks its split tier) and tells the parties of it,
-- in the same step: the inboxes in this slot directly, the others through the outbox.
-- Every key is in the order's shard's slot (storage/keys.py).
-- KEYS: txn, balances, order index, journal, day index, merchant-day index, record, outbox,
--       <n_counters counter hashes>, <inboxes>
-- ARGV: txn_json, use_merchant_index (0/1), record_json ('' for none), n, (account, amount)*,
--       n_counters, (field, amount)*, outbox entry ('' for none), maxlen, retention_ms,
--       event_json ('' for none), channel prefix
-- include: append_to_inboxes
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then
  return 0
end
local n = tonumber(ARGV[4])
for j = 0, n - 1 do
  redis.call('HINCRBY', KEYS[2], ARGV[5 + 2 * j], ARGV[6 + 2 * j])
end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], '*', 't', ARGV[1])
redis.call('RPUSH', KEYS[5], ARGV[1])
if ARGV[2] == '1' then
  redis.call('RPUSH', KEYS[6], ARGV[1])
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[7], ARGV[3])
end
local i = 5 + 2 * n
local n_counters = tonumber(ARGV[i])
for c = 1, n_counters do
  redis.call('HINCRBY', KEYS[8 + c], ARGV[i + 2 * c - 1], ARGV[i + 2 * c])
end
i = i + 2 * n_counters + 1
if ARGV[i] ~= '' then
  redis.call('XADD', KEYS[8], '*', 'x', ARGV[i])
end
if ARGV[i + 3] ~= '' then
  append_to_inboxes(9 + n_counters, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
end
return 1
