-- Post one ledger transaction exactly once, with the record of the business fact it
-- books (a payment record), in one step. Postings are never changed or deleted.
-- A new transaction also raises the counters that must agree with the ledger (a
-- merchant's monthly volume, which picks its split tier) in the same step.
-- KEYS: txn, balances, order index, journal, day index, merchant-day index, record,
--       counter hash*
-- ARGV: txn_json, use_merchant_index (0/1), record_json ('' for none), n, (account, amount)*,
--       (field, amount) per counter hash
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
for c = 8, #KEYS do
  local at = 5 + 2 * n + 2 * (c - 8)
  redis.call('HINCRBY', KEYS[c], ARGV[at], ARGV[at + 1])
end
return 1
