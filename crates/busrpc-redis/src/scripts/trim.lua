-- Trims a request stream's head of the entries every group is done with:
-- those acknowledged, below the smallest id still pending and not after the
-- last one delivered. Unread and pending entries stay. KEYS[1]: the stream.
-- Returns the number of entries removed.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local bound = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local keep
  if info['pending'] > 0 then
    -- XPENDING's summary: count, smallest id, greatest id, consumers.
    keep = redis.call('XPENDING', KEYS[1], info['name'])[2]
  else
    local ms, seq = parse(info['last-delivered-id'])
    keep = string.format('%.0f-%.0f', ms, seq + 1)
  end
  if bound == nil or before(keep, bound) then bound = keep end
end
if bound == nil then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
