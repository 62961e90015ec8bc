"""The Lua scripts of the Redis state: each check-and-update runs whole inside Redis.

Redis runs a script without interleaving any other command, so a check and the update
that follows it cannot race another instance's (no read-modify-write from Python).

Layout (``finops:`` namespace, every key with a TTL):

    finops:rate:<scope>:<name>:req|tok      zset of "<id>|<amount>" scored by time (the last minute)
    finops:rate:<scope>:<name>:req|tok:n    their total, kept as members come and go
    finops:held:<scope>:<name>              zset of "<id>|<usd>" scored by when the hold expires
    finops:held:<scope>:<name>:n            their total
    finops:spend:<scope>:<name>:<period>:<window start>   USD spent in that window
    finops:parked:<provider>:<key>          why, with the parking as its expiry

Each script takes its keys in ``KEYS`` and one JSON argument describing them; numbers
come back as strings (``%.17g``: Lua numbers would be truncated to integers).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ADMIT", "LOOK", "RESTORE", "SETTLE"]

RATE_TTL_S: Final = 120  # a minute's window, and a minute to spare

_PRELUDE: Final = """
local function num(x) return string.format('%.17g', x) end
local function amount(member) return tonumber(string.match(member, '|([^|]+)$')) end
-- drop the members of zset z scored at or below cut, keeping their total t; what is left
local function drain(z, t, cut)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', cut)
  if #old == 0 then return tonumber(redis.call('GET', t) or '0') end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', cut)
  if redis.call('ZCARD', z) == 0 then
    redis.call('DEL', t)
    return 0
  end
  local gone = 0
  for _, m in ipairs(old) do gone = gone + amount(m) end
  return math.max(tonumber(redis.call('INCRBYFLOAT', t, -gone)), 0)
end
local function put(z, t, score, member, ttl)
  redis.call('ZADD', z, score, member)
  redis.call('INCRBYFLOAT', t, amount(member))
  redis.call('EXPIRE', z, ttl)
  redis.call('EXPIRE', t, ttl)
end
"""

# KEYS, per owner (a key, then its team): req zset, req total, tok zset, tok total, held zset,
# held total, then one spend counter per budget. ARGV[1]: {now, usd, ttl, hold, event,
# owners: [{rpm, tpm, limits: [usd...]}]} (-1: no limit). Replies
#   {'rate', owner, 'requests'|'tokens', requests, tokens, wait}   a rate limit reached
#   {'budget', owner, budget, spent, held}                         a budget spent
#   {'missing', key index...}                                      counters to rebuild first
#   {'ok', per owner: held, spent per budget}                      admitted, counted, held
ADMIT: Final = _PRELUDE + f"""
local a = cjson.decode(ARGV[1])
local now, base, k = a.now, {{}}, 1
for i, o in ipairs(a.owners) do
  base[i] = k
  k = k + 6 + #o.limits
end
local function wait(z, used, limit)
  local ev = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  for n = 1, #ev, 2 do
    used = used - amount(ev[n])
    if used < limit then return math.max(tonumber(ev[n + 1]) + 60 - now, 0) end
  end
  return 60
end
for i, o in ipairs(a.owners) do
  local b = base[i]
  local rq = drain(KEYS[b], KEYS[b + 1], now - 60)
  local tk = drain(KEYS[b + 2], KEYS[b + 3], now - 60)
  if o.rpm >= 0 and rq >= o.rpm then
    return {{'rate', i, 'requests', num(rq), num(tk), num(wait(KEYS[b], rq, o.rpm))}}
  end
  if o.tpm >= 0 and tk >= o.tpm then
    return {{'rate', i, 'tokens', num(rq), num(tk), num(wait(KEYS[b + 2], tk, o.tpm))}}
  end
end
local seen, missing, held_at = {{}}, {{}}, {{}}
for i, o in ipairs(a.owners) do
  local b = base[i]
  local held = drain(KEYS[b + 4], KEYS[b + 5], now)
  table.insert(seen, held)
  held_at[i] = #seen
  for j, limit in ipairs(o.limits) do
    local spent = redis.call('GET', KEYS[b + 5 + j])
    if not spent then
      table.insert(missing, b + 5 + j)
      table.insert(seen, '')
    elseif tonumber(spent) + held >= limit then
      return {{'budget', i, j, spent, num(held)}}
    else
      table.insert(seen, spent)
    end
  end
end
if #missing > 0 then return {{'missing', unpack(missing)}} end
for i, o in ipairs(a.owners) do
  local b = base[i]
  put(KEYS[b], KEYS[b + 1], now, a.event .. '|1', {RATE_TTL_S})
  if a.usd > 0 and #o.limits > 0 then
    put(KEYS[b + 4], KEYS[b + 5], now + a.ttl, a.hold, math.ceil(a.ttl))
    seen[held_at[i]] = seen[held_at[i]] + a.usd
  end
end
for i = 1, #held_at do seen[held_at[i]] = num(seen[held_at[i]]) end
return {{'ok', unpack(seen)}}
"""

# KEYS: held zset + total per owner of the hold, tok zset + total per owner charged, then the
# spend counters. ARGV[1]: {now, hold, held, charged, event, tokens, costs: [...], ttls: [...]}.
# Releases the hold, adds the tokens, adds each cost to its counter where it exists; replies
# with each counter's spend after ('' where it is missing: rebuild it, then charge it again).
SETTLE: Final = _PRELUDE + f"""
local a = cjson.decode(ARGV[1])
local k = 1
for _ = 1, a.held do
  if redis.call('ZREM', KEYS[k], a.hold) == 1 then
    if redis.call('ZCARD', KEYS[k]) == 0 then redis.call('DEL', KEYS[k + 1])
    else redis.call('INCRBYFLOAT', KEYS[k + 1], -amount(a.hold)) end
  end
  k = k + 2
end
for _ = 1, a.charged do
  drain(KEYS[k], KEYS[k + 1], a.now - 60)
  if a.tokens > 0 then put(KEYS[k], KEYS[k + 1], a.now, a.event, {RATE_TTL_S}) end
  k = k + 2
end
local out = {{}}
for j, cost in ipairs(a.costs) do
  local key = KEYS[k + j - 1]
  if redis.call('EXISTS', key) == 1 then
    table.insert(out, cost ~= 0 and redis.call('INCRBYFLOAT', key, cost) or redis.call('GET', key))
    redis.call('EXPIRE', key, a.ttls[j])
  else
    table.insert(out, '')
  end
end
return out
"""

# KEYS: spend counters. ARGV[1]: {values: [...], ttls: [...]}: each set only where missing
# (another instance may have rebuilt it first); replies with what each holds now.
RESTORE: Final = """
local a = cjson.decode(ARGV[1])
local out = {}
for j, key in ipairs(KEYS) do
  redis.call('SET', key, a.values[j], 'NX', 'EX', a.ttls[j])
  table.insert(out, redis.call('GET', key))
end
return out
"""

# KEYS: spend counters, then req and tok zset + total per owner, then parked keys.
# ARGV[1]: {now, counters, owners}. Replies with each counter's spend ('' missing), each
# owner's requests and tokens in the last minute, then each parked key's why and ms left.
LOOK: Final = _PRELUDE + """
local a = cjson.decode(ARGV[1])
local out = {}
for j = 1, a.counters do table.insert(out, redis.call('GET', KEYS[j]) or '') end
local k = a.counters + 1
for _ = 1, a.owners do
  table.insert(out, num(drain(KEYS[k], KEYS[k + 1], a.now - 60)))
  table.insert(out, num(drain(KEYS[k + 2], KEYS[k + 3], a.now - 60)))
  k = k + 4
end
for j = k, #KEYS do
  table.insert(out, redis.call('GET', KEYS[j]) or '')
  table.insert(out, redis.call('PTTL', KEYS[j]))
end
return out
"""
