-- Removes from a group the consumers that died: their alive key
-- ({stream}:alive:{consumer}) expired, idle longer than ARGV[2]
-- milliseconds, nothing pending (live servers have claimed what they
-- held). KEYS[1]: the request stream; ARGV[1]: the group. The check and
-- the removal are one step, so a consumer that reads meanwhile is never
-- removed with an entry pending (XGROUP DELCONSUMER would drop it).
-- Returns the names removed.
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do
    fields[consumer[i]] = consumer[i + 1]
  end
  if fields['pending'] == 0 and fields['idle'] > tonumber(ARGV[2])
      and redis.call('EXISTS', KEYS[1] .. ':alive:' .. fields['name']) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    removed[#removed + 1] = fields['name']
  end
end
return removed
