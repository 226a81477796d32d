-- Applies one registry operation's writes, atomically, if nothing it read has changed since.
--
-- The operation itself ran on a node (the same Rust rules as in memory); this script is its
-- compare-and-set: every channel it read must still carry the version it read (an absent
-- channel the empty string), and the cluster-wide counts it relies on must still allow it.
--
-- KEYS: every key named below, by index.
-- ARGV[1]: JSON {checks = [{k, v}], cap = {k, max}?, addr = {k, max}?, waiting = {k, max, n}?,
--          lease = {k, t}?, alive = [k]?, feed, writes = [...]}
-- ARGV[2..]: documents, referenced by `put` and `putv` writes as `a`.
-- Returns {1, versions of the `putv` writes in order} when applied, {0} on a conflict (the
-- caller reloads and retries), {-1} when the channel capacity is reached, {-2} when the
-- owner's address has too many channels, {-3} when the waiting room is full, {-4} when the
-- write is made under a channel lease (`lease = {k, t}`) that another node has taken, {-5}
-- when a node named in `alive = [k, ...]` (its heartbeat key) is gone.
--
-- Channel documents are written with `putv` and deleted with `delv`: each gets a version that
-- only grows (Redis's clock in microseconds, or one more than the version it replaces, so a
-- channel created again after a deletion is newer too), and every one is announced on the
-- change feed as "<channel> <version>" lines, in this same atomic step (see replica.rs); a
-- `putv` with `c` (how the write changed the channel's peers) publishes that first. A
-- `putv` may carry `p`, the channel's password hash (empty: public), kept in field `p` beside
-- the document so that a joining viewer's node reads it alone.
local spec = cjson.decode(ARGV[1])
-- An owner's write (see lease.rs): refused unless its lease still holds exactly this token.
if spec.lease then
  if redis.call('GET', KEYS[spec.lease.k]) ~= spec.lease.t then return {-4} end
end
-- Nodes whose sockets this write lists (forwarded joins): each must still be alive, or its
-- list would outlive the clean-up after it.
if spec.alive then
  for _, k in ipairs(spec.alive) do
    if redis.call('EXISTS', KEYS[k]) == 0 then return {-5} end
  end
end
for _, c in ipairs(spec.checks) do
  local v = redis.call('HGET', KEYS[c.k], 'v')
  if v == false then v = '' end
  if v ~= c.v then return {0} end
end
if spec.cap then
  if redis.call('ZCARD', KEYS[spec.cap.k]) >= spec.cap.max then return {-1} end
end
if spec.addr then
  local n = tonumber(redis.call('GET', KEYS[spec.addr.k]) or '0')
  if n >= spec.addr.max then return {-2} end
end
if spec.waiting then
  local n = tonumber(redis.call('GET', KEYS[spec.waiting.k]) or '0')
  if n + spec.waiting.n > spec.waiting.max then return {-3} end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local versions = {1}
local announced = {}
-- A version written by an earlier release is random hex: only plain decimal numbers that a
-- double holds exactly count (a hex string of digits only, or one like "5e12", must not make
-- the next version round to the same number, or be infinite).
local function next_version(key)
  local stored = redis.call('HGET', key, 'v')
  local old = 0
  if stored and string.match(stored, '^%d+$') and #stored <= 16 then
    old = tonumber(stored)
    if old >= 9007199254740992 then old = 0 end
  end
  return math.max(old + 1, now)
end
for _, w in ipairs(spec.writes) do
  local key = KEYS[w.k]
  if w.op == 'putv' then
    local v = next_version(key)
    redis.call('HSET', key, 'v', string.format('%.0f', v), 'd', ARGV[w.a])
    if w.p then redis.call('HSET', key, 'p', w.p) end
    versions[#versions + 1] = v
    -- How the write changed the channel's peers (a JSON object naming the version it
    -- replaces), completed with the version written, before the announcement that follows.
    if w.c then
      announced[#announced + 1] = '{"v":' .. string.format('%.0f', v) .. ',' .. string.sub(w.c, 2)
    end
    announced[#announced + 1] = w.id .. ' ' .. string.format('%.0f', v)
  elseif w.op == 'delv' then
    local v = next_version(key)
    redis.call('DEL', key)
    announced[#announced + 1] = w.id .. ' ' .. string.format('%.0f', v)
  elseif w.op == 'put' then
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
if #announced > 0 then
  redis.call('PUBLISH', spec.feed, table.concat(announced, '\n'))
end
return versions
