-- Adds a request to its stream, if the stream exists, unless it already
-- holds its bound:
-- a publish beyond the bound is refused, and nothing admitted is evicted
-- (XADD MAXLEN would drop the oldest entries, read or not, pending or not).
-- KEYS[1]: the stream. ARGV[1]: the bound. ARGV[2..]: field, value, ...
-- Returns the stream's length with the request added.
-- A stream that does not exist has never had a server: only a server's
-- XGROUP CREATE ... MKSTREAM makes one, and the request must not.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('BUSRPCNOSERVICE ' .. KEYS[1])
end
local bound = tonumber(ARGV[1])
if redis.call('XLEN', KEYS[1]) >= bound then
  return redis.error_reply('BUSRPCFULL ' .. KEYS[1] .. ' holds ' .. ARGV[1] ..
    ' requests (its queue_max_len); none is evicted to make room')
end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
return redis.call('XLEN', KEYS[1])
