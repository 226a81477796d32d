-- Takes a channel's lease unless a live node holds it (see lease.rs).
-- KEYS[1]: the lease; KEYS[2]: the channel's document.
-- ARGV[1]: this node; ARGV[2]: the time-to-live (ms); ARGV[3]: the heartbeat keys' prefix.
-- Returns the token now held ("<node> <epoch>": this node's, or the live holder's), or nil
-- when the channel does not exist (a lease left over from it is dropped) or when this node's
-- own heartbeat is gone (it signed off, or the others took it for dead): such a node takes
-- nothing and keeps nothing.
local mine = redis.call('EXISTS', ARGV[3] .. ARGV[1]) == 1
local held = redis.call('GET', KEYS[1])
if held then
  local holder = string.match(held, '^(%S+) ')
  if holder == ARGV[1] then
    if mine then
      -- Its own: it may act on it for a whole time-to-live from now, so Redis must agree.
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
      return held
    end
    redis.call('DEL', KEYS[1])
    return false
  end
  if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then
    return held
  end
end
if not mine then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then
  if held then redis.call('DEL', KEYS[1]) end
  return false
end
local epoch = redis.call('HINCRBY', KEYS[2], 'e', 1)
local token = ARGV[1] .. ' ' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
