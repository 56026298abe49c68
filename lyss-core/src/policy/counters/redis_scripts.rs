//! The Lua scripts of the Redis budget counters (see the parent module). Each counting script
//! starts with [`COUNTS`]: it refuses with `{-1}` while the counters are not ready, and replies
//! with a status followed by `spent, reserved` of each budget it was given.

/// The counters of each budget: `{s, r}` per key, returned after every script's status.
const COUNTS: &str = r#"
local function counts(from, n)
  local out = {}
  for i = 1, n do
    local c = redis.call('HMGET', KEYS[from + i], 's', 'r')
    out[2 * i - 1] = tonumber(c[1] or 0)
    out[2 * i] = tonumber(c[2] or 0)
  end
  return out
end
local function reply(status, from, n)
  local out = counts(from, n)
  table.insert(out, 1, status)
  return out
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
"#;

/// KEYS: ready, expiries, hold record, counters…; ARGV: reservation id, expires at, then per
/// budget (field, limit, amount). 1: held; 0: does not fit.
const RESERVE: &str = r#"
local n = #KEYS - 3
local c = counts(3, n)
if redis.call('EXISTS', KEYS[3]) == 1 then
  -- Already held: a retry, or a rebuild read this hold's row before this script ran.
  for i = 1, n do
    if c[2 * i - 1] + c[2 * i] > tonumber(ARGV[3 * i + 1]) then
      for j = 1, n do
        local held = tonumber(redis.call('HGET', KEYS[3], ARGV[3 * j]) or 0)
        redis.call('HINCRBY', KEYS[3 + j], 'r', -held)
      end
      redis.call('DEL', KEYS[3])
      redis.call('ZREM', KEYS[2], ARGV[1])
      return reply(0, 3, n)
    end
  end
  return reply(1, 3, n)
end
for i = 1, n do
  if c[2 * i - 1] + c[2 * i] + tonumber(ARGV[3 * i + 2]) > tonumber(ARGV[3 * i + 1]) then
    return reply(0, 3, n)
  end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[3 + i], 'r', ARGV[3 * i + 2])
  redis.call('HSET', KEYS[3], ARGV[3 * i], ARGV[3 * i + 2])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return reply(1, 3, n)
"#;

/// KEYS: ready, hold record, counters…; ARGV per budget (field, limit, amount). 1: grown;
/// 0: does not fit; 2: the reservation is gone (settled or released).
const TOP_UP: &str = r#"
local n = #KEYS - 2
if redis.call('EXISTS', KEYS[2]) == 0 then return reply(2, 2, n) end
local c = counts(2, n)
for i = 1, n do
  if c[2 * i - 1] + c[2 * i] + tonumber(ARGV[3 * i]) > tonumber(ARGV[3 * i - 1]) then
    return reply(0, 2, n)
  end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[2 + i], 'r', ARGV[3 * i])
  redis.call('HINCRBY', KEYS[2], ARGV[3 * i - 2], ARGV[3 * i])
end
return reply(1, 2, n)
"#;

/// KEYS: ready, expiries, released, hold record, counters…; ARGV: reservation id, then per
/// budget (field, spend). Turns the hold into spend; a released hold only adds the spend
/// (once); neither: the spend is already counted (the counters were rebuilt after it).
const SETTLE: &str = r#"
local n = #KEYS - 4
if redis.call('EXISTS', KEYS[4]) == 1 then
  for i = 1, n do
    local held = tonumber(redis.call('HGET', KEYS[4], ARGV[2 * i]) or 0)
    redis.call('HINCRBY', KEYS[4 + i], 'r', -held)
    redis.call('HINCRBY', KEYS[4 + i], 's', ARGV[2 * i + 1])
  end
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
  for i = 1, n do
    redis.call('HINCRBY', KEYS[4 + i], 's', ARGV[2 * i + 1])
  end
end
return reply(1, 4, n)
"#;

/// KEYS: ready, counters…
const READ: &str = r#"
return reply(1, 1, #KEYS - 1)
"#;

/// KEYS: ready, expiries, released; ARGV: now, key prefix, most to release. Releases holds
/// that expired, marks them released; returns `{1, {id, field, amount, …}, …}`.
const REAP: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {1}
for _, id in ipairs(ids) do
  local record = ARGV[2] .. 'h:' .. id
  local fields = redis.call('HGETALL', record)
  local item = {id}
  for k = 1, #fields, 2 do
    redis.call('HINCRBY', ARGV[2] .. 'u:' .. fields[k], 'r', -tonumber(fields[k + 1]))
    item[#item + 1] = fields[k]
    item[#item + 1] = fields[k + 1]
  end
  redis.call('DEL', record)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], ARGV[1], id)
  out[#out + 1] = item
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[1]) - 86400)
return out
"#;

/// KEYS: ready, released; ARGV: key prefix, reservation id, then (field, amount) pairs. Adds
/// the amounts as spend unless a late settlement already took the released marker.
const CLAIM: &str = r#"
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  for k = 3, #ARGV, 2 do
    redis.call('HINCRBY', ARGV[1] .. 'u:' .. ARGV[k], 's', ARGV[k + 1])
  end
end
return {1}
"#;

/// KEYS: ready, lost; ARGV: none, or a `run_id` that is not the answering server's. Forgets
/// the counters (if they are still the ones built on that `run_id`: another replica may have
/// rebuilt them meanwhile) and notes when, in milliseconds of Redis's clock.
pub(crate) const FORGET: &str = r#"
if #ARGV == 0 or redis.call('GET', KEYS[1]) == ARGV[1] then
  local t = redis.call('TIME')
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
end
return {1}
"#;

/// Every script (sent by hash after its first use).
pub(crate) struct Scripts {
    pub(crate) reserve: redis::Script,
    pub(crate) top_up: redis::Script,
    pub(crate) settle: redis::Script,
    pub(crate) read: redis::Script,
    pub(crate) reap: redis::Script,
    pub(crate) claim: redis::Script,
    pub(crate) forget: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_counts = |body: &str| redis::Script::new(&format!("{COUNTS}{body}"));
        Self {
            reserve: with_counts(RESERVE),
            top_up: with_counts(TOP_UP),
            settle: with_counts(SETTLE),
            read: with_counts(READ),
            reap: with_counts(REAP),
            claim: with_counts(CLAIM),
            forget: redis::Script::new(FORGET),
        }
    }
}
