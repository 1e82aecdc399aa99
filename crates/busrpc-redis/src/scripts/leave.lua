-- Leaves a consumer group cleanly. KEYS[1]: the request stream; ARGV[1]:
-- the group; ARGV[2]: the consumer. Deletes the consumer only if nothing
-- is pending with it (XGROUP DELCONSUMER would drop what is), in one
-- step. Returns how many it deleted (XGROUP's answer), or -1 if it stays.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
