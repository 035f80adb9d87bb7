"""The router's Lua scripts: every change to an endpoint's state is one script, so it is atomic across
router replicas and a redelivered reward or a crash mid-way can never leave half a change behind.

Per endpoint (``{ep}`` is a Redis Cluster hash tag, so one endpoint's keys share a slot):
``spec`` / ``revision`` (JSON and a counter for compare-and-set), ``stats`` (hash ``<variant>|<counter>``
plus ``_|late`` / ``_|stale``), ``lat`` (latency histogram ``<variant>|<bucket>``), ``lin``
(LinUCB ``<variant>|A|i|j`` upper triangle and ``<variant>|b|i``), ``pending`` (prediction_id ->
``variant|generation|context``), ``deadlines`` (zset prediction_id -> when its reward is given up),
``events`` (list, newest first), ``done:<event_id>`` (reward markers).

A variant's ``gen`` counter is bumped whenever its statistics are reset (its target changed, or a new
experiment started); a pending decision remembers the generation it was made in, and a reward for an
older generation is dropped as stale instead of polluting the new experiment.
"""

from __future__ import annotations

# apply(stats, lin, record, reward or nil, expired): settle one pending decision.
# Returns 1 applied, 3 stale (the variant was reset since the decision), 4 settled without a reward.
_APPLY = """
local function apply(stats, lin, rec, r, expired)
  local v, g, ctx = string.match(rec, '^([^|]*)|([^|]*)|?(.*)$')
  local cur = redis.call('HGET', stats, v .. '|gen') or '0'
  if tonumber(cur) ~= tonumber(g) then
    redis.call('HINCRBY', stats, '_|stale', 1)
    return 3
  end
  redis.call('HINCRBY', stats, v .. '|settled', 1)
  if expired then redis.call('HINCRBY', stats, v .. '|expired', 1) end
  if r == nil then return 4 end
  redis.call('HINCRBY', stats, v .. '|rewards', 1)
  redis.call('HINCRBYFLOAT', stats, v .. '|sum', r)
  redis.call('HINCRBYFLOAT', stats, v .. '|sumsq', r * r)
  if ctx ~= nil and ctx ~= '' then
    local x = {}
    for part in string.gmatch(ctx, '[^,]+') do x[#x + 1] = tonumber(part) end
    for i = 1, #x do
      redis.call('HINCRBYFLOAT', lin, v .. '|b|' .. (i - 1), r * x[i])
      for j = i, #x do
        redis.call('HINCRBYFLOAT', lin, v .. '|A|' .. (i - 1) .. '|' .. (j - 1), x[i] * x[j])
      end
    end
  end
  return 1
end
"""

#: KEYS: stats, lat, pending, deadlines. ARGV: variant, latency bucket ('' when the latency is counted later,
#: see LATENCIES), prediction_id, deadline, context csv.
DECISION = """
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|decisions', 1)
if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 1) end
local g = redis.call('HGET', KEYS[1], ARGV[1] .. '|gen') or '0'
local rec = ARGV[1] .. '|' .. g
if ARGV[5] ~= '' then rec = rec .. '|' .. ARGV[5] end
redis.call('HSET', KEYS[3], ARGV[3], rec)
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
return 1
"""

#: KEYS: stats, pending, deadlines. ARGV: prediction_id. Takes back a decision whose variant then failed to
#: serve (another variant answers under the same prediction_id): no longer pending, and not counted as a
#: decision unless the variant's statistics were reset since. Returns 1, or 0 when it was not pending.
WITHDRAW = """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local v, g = string.match(rec, '^([^|]*)|([^|]*)')
local cur = redis.call('HGET', KEYS[1], v .. '|gen') or '0'
if tonumber(cur) == tonumber(g) then redis.call('HINCRBY', KEYS[1], v .. '|decisions', -1) end
return 1
"""

#: KEYS: lat. ARGV: pairs of ``<variant>|<bucket>`` and a count: latency samples counted in a process
#: and added in one step.
LATENCIES = """
for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1])) end
return 1
"""

#: KEYS: marker, stats, pending, deadlines, lin. ARGV: marker ttl, prediction_id, reward.
#: Returns 0 duplicate, 1 applied, 2 late (no pending decision: it timed out or is unknown), 3 stale.
REWARD = (
    _APPLY
    + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local rec = redis.call('HGET', KEYS[3], ARGV[2])
if not rec then
  redis.call('HINCRBY', KEYS[2], '_|late', 1)
  return 2
end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return apply(KEYS[2], KEYS[5], rec, tonumber(ARGV[3]), false)
"""
)

#: KEYS: stats, pending, deadlines, lin. ARGV: now, limit, missing reward ('' for none).
#: Settles decisions whose deadline passed (as the missing reward, or as expired only); returns how many.
EXPIRE = (
    _APPLY
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local r = nil
if ARGV[3] ~= '' then r = tonumber(ARGV[3]) end
for _, pid in ipairs(ids) do
  local rec = redis.call('HGET', KEYS[2], pid)
  redis.call('HDEL', KEYS[2], pid)
  redis.call('ZREM', KEYS[3], pid)
  if rec then apply(KEYS[1], KEYS[4], rec, r, true) end
end
return #ids
"""
)

#: KEYS: spec, revision, endpoints set, stats, lat, events, lin. ARGV: expected revision, spec JSON,
#: endpoint, max events, '1' to clear the LinUCB state (its features changed), number of variants to
#: reset, those variants, then event JSONs. Returns the new revision, or -1 when the stored one differs.
PUT_SPEC = """
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
if rev ~= tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[2], rev + 1)
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
if ARGV[5] == '1' then redis.call('DEL', KEYS[7]) end
local nreset = tonumber(ARGV[6])
for i = 1, nreset do
  local prefix = ARGV[6 + i] .. '|'
  local keep = prefix .. 'gen'
  for _, h in ipairs({KEYS[4], KEYS[5], KEYS[7]}) do
    for _, field in ipairs(redis.call('HKEYS', h)) do
      if string.sub(field, 1, #prefix) == prefix and field ~= keep then redis.call('HDEL', h, field) end
    end
  end
  redis.call('HINCRBY', KEYS[4], keep, 1)
end
for i = 7 + nreset, #ARGV do redis.call('LPUSH', KEYS[6], ARGV[i]) end
redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[4]) - 1)
return rev + 1
"""
