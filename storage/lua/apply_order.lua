-- One order change, its stock movement, its indexes and its events: all or nothing.
-- Every key is in the order's merchant shard's slot (storage/keys.py).
-- KEYS: order, stock, outbox, <n_idx index zsets>, <n_unidx zsets>, <n_mail mailboxes>,
--       <inbox streams>
-- ARGV: expected_version, new_version, order_json, status, rider_id, merchant_id, customer_id,
--       stock_sign, n_stock, (item, qty)*, n_idx, member, score*, n_unidx, n_mail, message*,
--       maxlen, retention_ms, event_json, channel prefix, outbox entry, bell prefix
-- Each message is a follow-up the change sets going, posted to the mailbox of the
-- entity that acts on it (and its bell rung): it exists exactly when the change does.
-- What the change does in other slots is the outbox entry ('' for none), relayed next.
-- The index zsets (indexes and due-time sets) get the order id as member, each with its
-- own score; the order leaves the n_unidx zsets (a due time that no longer applies).
-- include: append_to_inboxes
local order_key, stock_key = KEYS[1], KEYS[2]
local current = tonumber(redis.call('HGET', order_key, 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return {'stale_version', tostring(current)}
end
local stock_sign = tonumber(ARGV[8])
local n_stock = tonumber(ARGV[9])
local i = 10
if stock_sign < 0 then
  for j = 0, n_stock - 1 do
    local item, qty = ARGV[i + 2 * j], tonumber(ARGV[i + 2 * j + 1])
    local have = tonumber(redis.call('HGET', stock_key, item) or '0')
    if have < qty then
      return {'out_of_stock', item, tostring(have)}
    end
  end
end
if stock_sign ~= 0 then
  for j = 0, n_stock - 1 do
    redis.call('HINCRBY', stock_key, ARGV[i + 2 * j], stock_sign * tonumber(ARGV[i + 2 * j + 1]))
  end
end
i = i + 2 * n_stock
redis.call('HSET', order_key, 'json', ARGV[3], 'version', ARGV[2], 'status', ARGV[4],
  'rider_id', ARGV[5], 'merchant_id', ARGV[6], 'customer_id', ARGV[7])
local n_idx = tonumber(ARGV[i])
local member = ARGV[i + 1]
for k = 1, n_idx do
  redis.call('ZADD', KEYS[3 + k], ARGV[i + 1 + k], member)
end
i = i + 2 + n_idx
local n_unidx = tonumber(ARGV[i])
for k = 1, n_unidx do
  redis.call('ZREM', KEYS[3 + n_idx + k], member)
end
i = i + 1
local n_mail = tonumber(ARGV[i])
for k = 1, n_mail do
  local mailbox = KEYS[3 + n_idx + n_unidx + k]
  redis.call('XADD', mailbox, '*', 'm', ARGV[i + k])
  redis.call('PUBLISH', ARGV[i + n_mail + 6] .. mailbox, '1')
end
i = i + 1 + n_mail
append_to_inboxes(4 + n_idx + n_unidx + n_mail, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
if ARGV[i + 4] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'x', ARGV[i + 4])
end
return {'ok'}
