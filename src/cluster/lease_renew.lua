-- Renews leases this node holds (see lease.rs).
-- KEYS: pairs of (lease, channel document); ARGV[1]: the time-to-live (ms), then one token
-- per pair. A lease whose channel is gone is released. Returns 1 for each lease still held,
-- 0 for each lost or released.
local out = {}
for i = 1, #KEYS, 2 do
  local token = ARGV[(i + 1) / 2 + 1]
  if redis.call('GET', KEYS[i]) == token then
    if redis.call('EXISTS', KEYS[i + 1]) == 1 then
      redis.call('PEXPIRE', KEYS[i], ARGV[1])
      out[#out + 1] = 1
    else
      redis.call('DEL', KEYS[i])
      out[#out + 1] = 0
    end
  else
    out[#out + 1] = 0
  end
end
return out
