-- Releases leases this node holds, at its sign-off (see lease.rs).
-- KEYS: leases; ARGV: one token per lease. A lease another node holds now is left alone.
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) end
end
return 1
