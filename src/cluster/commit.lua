-- Applies one registry operation's writes, atomically, if nothing it read has changed since.
--
-- The operation itself ran on a node (the same Rust rules as in memory); this script is its
-- compare-and-set: every channel it read must still carry the version it read (an absent
-- channel the empty string), and the cluster-wide counts it relies on must still allow it.
--
-- KEYS: every key named below, by index.
-- ARGV[1]: JSON {checks = [{k, v}], cap = {k, max}?, addr = {k, max}?, waiting = {k, max, n}?,
--          writes = [...]}
-- ARGV[2..]: channel documents, referenced by `put` writes as `a`.
-- Returns 1 when applied, 0 on a conflict (the caller reloads and retries), -1 when the
-- channel capacity is reached, -2 when the owner's address has too many channels, -3 when
-- the waiting room is full.
local spec = cjson.decode(ARGV[1])
for _, c in ipairs(spec.checks) do
  local v = redis.call('HGET', KEYS[c.k], 'v')
  if v == false then v = '' end
  if v ~= c.v then return 0 end
end
if spec.cap then
  if redis.call('ZCARD', KEYS[spec.cap.k]) >= spec.cap.max then return -1 end
end
if spec.addr then
  local n = tonumber(redis.call('GET', KEYS[spec.addr.k]) or '0')
  if n >= spec.addr.max then return -2 end
end
if spec.waiting then
  local n = tonumber(redis.call('GET', KEYS[spec.waiting.k]) or '0')
  if n + spec.waiting.n > spec.waiting.max then return -3 end
end
for _, w in ipairs(spec.writes) do
  local key = KEYS[w.k]
  if w.op == 'put' then
    redis.call('HSET', key, 'v', w.v, 'd', ARGV[w.a])
  elseif w.op == 'del' then
    redis.call('DEL', key)
  elseif w.op == 'zadd' then
    redis.call('ZADD', key, w.s, w.m)
  elseif w.op == 'zrem' then
    redis.call('ZREM', key, w.m)
  elseif w.op == 'sadd' then
    redis.call('SADD', key, w.m)
  elseif w.op == 'srem' then
    redis.call('SREM', key, w.m)
  elseif w.op == 'incr' then
    -- Counters at zero are deleted: nothing is left behind once every channel is gone.
    if redis.call('INCRBY', key, w.n) <= 0 then redis.call('DEL', key) end
  end
end
return 1
