/**
 * The Lua scripts of RedisPresenceStore (redis-presence-store.ts, which describes the keys they
 * keep), one per call, each with the helpers every script shares.
 */

type Arg = string | number;

export interface PresenceCommands {
  sinalPresenceAdd(...args: Arg[]): Promise<number>;
  sinalPresenceRefresh(...args: Arg[]): Promise<number>;
  sinalPresenceRemove(...args: Arg[]): Promise<number>;
  sinalPresenceMark(...args: Arg[]): Promise<[number, string] | null>;
  sinalPresenceMembers(...args: Arg[]): Promise<string[]>;
  sinalPresenceExpire(...args: Arg[]): Promise<string[]>;
}

/** Helpers of every script (the key layout is in redis-presence-store.ts). */
export const PRELUDE = `
local function nextSeq(seqKey)
  return string.format('%016x', redis.call('INCR', seqKey))
end

-- The channel's member in the due index (its first entry's seq, then its topic) and that entry's time; nil when it has none.
local function indexEntry(expiry, topic)
  local first = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
  if first[1] == nil then return nil, nil end
  return string.sub(first[1], 1, 16) .. topic, first[2]
end

-- Puts the channel's new first entry in the due index in place of 'before'; the counter goes with the last channel.
local function reindex(due, seqKey, expiry, topic, before)
  local after, at = indexEntry(expiry, topic)
  if after == before then return end
  if before ~= nil then redis.call('ZREM', due, before) end
  if after ~= nil then
    redis.call('ZADD', due, at, after)
  elseif redis.call('ZCARD', due) == 0 then
    redis.call('DEL', seqKey)
  end
end

-- Marks an entry 'a' (active), 'i' (idle) or, with nil, not at all; keeps the user's counts. Whether it was marked.
local function setMark(marks, user, client, mark)
  local field = user .. '\\0' .. client
  local old = redis.call('HGET', marks, field)
  if old == mark or (not old and not mark) then return old ~= false end
  if old then
    if redis.call('HINCRBY', marks, user .. '\\0\\0m', -1) == 0 then redis.call('HDEL', marks, user .. '\\0\\0m') end
    if old == 'a' and redis.call('HINCRBY', marks, user .. '\\0\\0a', -1) == 0 then redis.call('HDEL', marks, user .. '\\0\\0a') end
  end
  if mark then
    redis.call('HSET', marks, field, mark)
    redis.call('HINCRBY', marks, user .. '\\0\\0m', 1)
    if mark == 'a' then redis.call('HINCRBY', marks, user .. '\\0\\0a', 1) end
  else
    redis.call('HDEL', marks, field)
  end
  return old ~= false
end

-- Decides a member's status again over its marked entries (see PresenceStore): its info (JSON) and whether the status changed.
local function decide(info, marks, user)
  local text = redis.call('HGET', info, user)
  if not text then return false, false end
  if not redis.call('HGET', marks, user .. '\\0\\0m') then return text, false end
  local data = cjson.decode(text)
  local status
  if data.chosen == 'away' or data.chosen == 'busy' then
    status = data.chosen
  elseif redis.call('HGET', marks, user .. '\\0\\0a') then
    status = 'online'
  else
    status = 'away'
  end
  if data.status == status then return text, false end
  data.status = status
  text = cjson.encode(data)
  redis.call('HSET', info, user, text)
  return text, true
end

-- Drops one entry (and its mark); the user's info (JSON) when it was the user's last one, false
-- otherwise; then whether the entry was marked.
local function dropEntry(info, order, clients, expiry, marks, seq, user, client)
  local field = user .. '\\0' .. client
  local marked = setMark(marks, user, client, nil)
  redis.call('ZREM', expiry, seq .. field)
  redis.call('HDEL', clients, field)
  if redis.call('HINCRBY', clients, user, -1) > 0 then return false, marked end
  redis.call('HDEL', clients, user)
  redis.call('ZREM', order, user)
  local left = redis.call('HGET', info, user) or '{}'
  redis.call('HDEL', info, user)
  return left, marked
end
`;

/** KEYS of the channel scripts: info, order, clients, expiry, due, seq, marks; ARGV: topic, user, client, ... */
export const SCRIPTS: Record<keyof PresenceCommands, { keys: number; body: string }> = {
  // ARGV[4] expiresAt, ARGV[5] '1' when ARGV[6] is the info to write. 1 when the user joined.
  sinalPresenceAdd: {
    keys: 7,
    body: `
local info, order, clients, expiry, due, seqKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local topic, user, client = ARGV[1], ARGV[2], ARGV[3]
local field = user .. '\\0' .. client
-- The info to write, decoded before the first write: a script that fails half way is not undone.
local newInfo = nil
if ARGV[5] == '1' then
  newInfo = ARGV[6]
  local current = redis.call('HGET', info, user)
  if current and current ~= '{}' then
    local merged = cjson.decode(current)
    for k, v in pairs(cjson.decode(ARGV[6])) do merged[k] = v end
    newInfo = cjson.encode(merged)
  end
end
local before = indexEntry(expiry, topic)
local old = redis.call('HGET', clients, field)
local joined = 0
if old then
  redis.call('ZREM', expiry, old .. field)
elseif redis.call('HINCRBY', clients, user, 1) == 1 then
  joined = 1
  redis.call('ZADD', order, redis.call('INCR', seqKey), user)
  if not newInfo then redis.call('HSET', info, user, '{}') end
end
if newInfo then redis.call('HSET', info, user, newInfo) end
local seq = nextSeq(seqKey)
redis.call('HSET', clients, field, seq)
redis.call('ZADD', expiry, ARGV[4], seq .. field)
reindex(due, seqKey, expiry, topic, before)
return joined
`,
  },
  // ARGV[4] expiresAt. 1 when the entry existed (and moved), 0 otherwise (nothing changes).
  sinalPresenceRefresh: {
    keys: 7,
    body: `
local clients, expiry, due, seqKey = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local topic, user, client = ARGV[1], ARGV[2], ARGV[3]
local field = user .. '\\0' .. client
local old = redis.call('HGET', clients, field)
if not old then return 0 end
local before = indexEntry(expiry, topic)
redis.call('ZREM', expiry, old .. field)
local seq = nextSeq(seqKey)
redis.call('HSET', clients, field, seq)
redis.call('ZADD', expiry, ARGV[4], seq .. field)
reindex(due, seqKey, expiry, topic, before)
return 1
`,
  },
  // 1 when that was the user's last entry (a leave).
  sinalPresenceRemove: {
    keys: 7,
    body: `
local info, order, clients, expiry, due, seqKey, marks = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local topic, user, client = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HGET', clients, user .. '\\0' .. client)
if not old then return 0 end
local before = indexEntry(expiry, topic)
local left = dropEntry(info, order, clients, expiry, marks, old, user, client)
reindex(due, seqKey, expiry, topic, before)
if left then return 1 end
return 0
`,
  },
  // KEYS: info, clients, marks; ARGV: user, mark ('a', 'i' or '' for none), chosen ('' for none), clients to mark.
  // false when the user is no member; else 1 or 0 (its status changed) and its info.
  sinalPresenceMark: {
    keys: 3,
    body: `
local info, clients, marks = KEYS[1], KEYS[2], KEYS[3]
local user, mark, chosen = ARGV[1], ARGV[2], ARGV[3]
local text = redis.call('HGET', info, user)
if not text then return false end
-- Decoded before the first write (a script that fails half way is not undone).
local chosenInfo = nil
if chosen ~= '' then
  local data = cjson.decode(text)
  data.chosen = chosen
  chosenInfo = cjson.encode(data)
end
if mark ~= '' then
  for i = 4, #ARGV do
    if redis.call('HEXISTS', clients, user .. '\\0' .. ARGV[i]) == 1 then setMark(marks, user, ARGV[i], mark) end
  end
end
if chosenInfo then redis.call('HSET', info, user, chosenInfo) end
local decided, changed = decide(info, marks, user)
if changed then return { 1, decided } end
return { 0, decided }
`,
  },
  // KEYS: order, info. Flat user, info pairs in join order (read in one step: no user without its info).
  sinalPresenceMembers: {
    keys: 2,
    body: `
local users = redis.call('ZRANGE', KEYS[1], 0, -1)
local flat = {}
-- One HGET each: unpack() of a big channel's users would pass Lua's stack limit (~8000).
for _, user in ipairs(users) do
  flat[#flat + 1] = user
  flat[#flat + 1] = redis.call('HGET', KEYS[2], user) or '{}'
end
return flat
`,
  },
  // KEYS: due, seq; ARGV: now, batch, the channel key before and after the tenant.
  // Takes the due head (the next entry of all channels) until none is due or the batch is done;
  // returns '1' when it stopped at the batch, '0' otherwise, then topic, user, 'l' and the info of each
// leave, or topic, user, 's' and the info of each status an expiry moved.
  sinalPresenceExpire: {
    keys: 2,
    body: `
local due, seqKey = KEYS[1], KEYS[2]
local now, batch, keyBefore, keyAfter = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local out = { '0' }
local done = 0
while true do
  local head = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, 1)
  if head[1] == nil then break end
  if done == batch then out[1] = '1' break end
  local indexed = head[1]
  local topic = string.sub(indexed, 17)
  local slash = string.find(topic, '/', 1, true)
  local base = keyBefore .. string.sub(topic, 1, slash - 1) .. keyAfter
  local name = string.sub(topic, slash + 1)
  local info, order, clients, expiry, marks = base .. ':info:' .. name, base .. ':order:' .. name, base .. ':clients:' .. name, base .. ':expiry:' .. name, base .. ':marks:' .. name
  local first = redis.call('ZRANGE', expiry, 0, 0)[1]
  -- The index names the channel's first entry; should it not (never expected), it is put right and nothing is dropped.
  if first ~= nil and string.sub(first, 1, 16) == string.sub(indexed, 1, 16) then
    local field = string.sub(first, 17)
    local nul = string.find(field, '\\0', 1, true)
    local user = string.sub(field, 1, nul - 1)
    local left, marked = dropEntry(info, order, clients, expiry, marks, string.sub(first, 1, 16), user, string.sub(field, nul + 1))
    if left then
      out[#out + 1] = topic
      out[#out + 1] = user
      out[#out + 1] = 'l'
      out[#out + 1] = left
    elseif marked then
      local decided, changed = decide(info, marks, user)
      if changed then
        out[#out + 1] = topic
        out[#out + 1] = user
        out[#out + 1] = 's'
        out[#out + 1] = decided
      end
    end
    done = done + 1
  end
  reindex(due, seqKey, expiry, topic, indexed)
end
return out
`,
  },
};
