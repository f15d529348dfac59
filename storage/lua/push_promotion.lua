-- Tell one customer of a promotion, once, if the customer still counts in the cell it
-- was found in (registered there, or connected there while that report lasts).
-- KEYS: the customer's place, the promotions it was told of, its inbox stream
-- ARGV: promotion id, ends_ms, cell, now_ms, maxlen, retention_ms, event_json,
--       channel prefix
-- Returns 'pushed', 'told' (it was told before) or 'elsewhere'.
-- include: append_to_inboxes
local place = redis.call('HMGET', KEYS[1], 'home', 'here', 'here_until')
local now = tonumber(ARGV[4])
local here = place[2] == ARGV[3] and tonumber(place[3] or '0') >= now
if place[1] ~= ARGV[3] and not here then return 'elsewhere' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then return 'told' end
append_to_inbox(KEYS[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return 'pushed'
