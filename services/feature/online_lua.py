"""The Redis Lua scripts of the online store: apply a batch of events, read many entities.

Apply: each event is applied atomically with its idempotency marker (``SET marker NX``: a redelivered
event is skipped), so at-least-once delivery gives exactly-once effects. One call takes a whole batch
(bounded by the caller, so Redis is never held for long); one event costs a few hash commands whatever
the number of features.

Read: windows are evaluated in Redis at the time of the read, and one JSON text comes back for all the
entities of the call.

Every aggregation state is a *payload* string, the same for a whole-history value, a window bucket and
a whole window, so buckets combine into windows with one function:
count ``"<n>"``, sum ``"<x>"`` (``%.17g``: exact), mean ``"<n>|<sum>"``, min/max the JSON number or ``""``,
last ``"<event time ms>|<json>"`` or ``""``, distinct_count ``"<n>"`` then the JSON values, each followed
by ``\\x1f`` (JSON never holds a raw one; the count up front makes reading it O(1)) or ``""``.

A view's windowed aggregations that share a window (same step and size) form a *group*, kept together:
one bucket holds the payloads of every aggregation of the group, joined by ``\x1d`` (so an event touches
one bucket field per window, not one per aggregation).

An entity's main hash (``mlops:feature:online:<entity>``), read whole on every read:

- ``p:<view>:<field>``  a pass-through field, ``"<event time ms>|<json>"`` (last by event time)
- ``a:<agg>``           a whole-history aggregation's payload
- ``m:<view>:<group>``  a window group at the view's watermark: ``<bucket>`` then the whole window's payloads
- ``__wm:<view>``       the view's watermark (the greatest event time it has seen for this entity);
  ``__event_time`` the greatest of all; ``__late`` events too late for windows; ``__ttl``/``__wttl`` when
  the TTL of the main/window hash was last renewed (in sixteenths of it: renewed once per sixteenth,
  not on every event)

Its window hash (``mlops:feature:window:<entity>``) holds the buckets, ``<view>:<group>:<bucket>`` -> the
group's payloads, with bucket = floor(event time / step); a window of one bucket (tumbling) needs none:
its ``m:`` field is that bucket. A read at the watermark's bucket uses ``m:``
alone; a read after it combines the buckets still inside the window; a read a whole window later needs
nothing.

Windows: an event more than ``allowed_lateness`` behind the view's watermark is not counted in its
windows; when the watermark enters a new bucket, buckets that left the window are deleted (at most one
window's worth) and ``m:`` is recomputed from the buckets left, so both hashes stay bounded.
"""

# Payload helpers shared by both scripts.
_COMMON = r"""
local floor, find, sub, fmt, match = math.floor, string.find, string.sub, string.format, string.match

-- the parts of s between each sep (a plain string, not a pattern)
local function split(s, sep)
  local out, pos = {}, 1
  while true do
    local i = find(s, sep, pos, true)
    if not i then out[#out + 1] = sub(s, pos); return out end
    out[#out + 1] = sub(s, pos, i - 1)
    pos = i + 1
  end
end

local function number(x)
  if x ~= x or x == math.huge or x == -math.huge then return 'null' end
  if x == floor(x) and x > -1e15 and x < 1e15 then return fmt('%d', x) end
  return fmt('%.17g', x)
end

local function empty(fn)
  if fn == 'count' or fn == 'sum' then return '0' end
  if fn == 'mean' then return '0|0' end
  return ''
end

-- the payload after one more event (json value v, its number x or nil, event time t)
local function step(fn, p, v, x, t)
  if p == nil or p == false then p = empty(fn) end
  if fn == 'count' then return fmt('%d', tonumber(p) + 1) end
  if fn == 'last' then
    if p ~= '' and t < tonumber(match(p, '^(%-?%d+)|')) then return p end
    return fmt('%d', t) .. '|' .. v
  end
  if fn == 'distinct_count' then
    if p == '' then return '1\31' .. v .. '\31' end
    local head = find(p, '\31', 1, true)
    if find(p, '\31' .. v .. '\31', head, true) then return p end
    return fmt('%d', tonumber(sub(p, 1, head - 1)) + 1) .. sub(p, head) .. v .. '\31'
  end
  if x == nil then return p end
  if fn == 'sum' then return fmt('%.17g', tonumber(p) + x) end
  if fn == 'mean' then
    local bar = find(p, '|', 1, true)
    return fmt('%d', tonumber(sub(p, 1, bar - 1)) + 1) .. '|' .. fmt('%.17g', tonumber(sub(p, bar + 1)) + x)
  end
  if p == '' or (fn == 'min' and x < tonumber(p)) or (fn == 'max' and x > tonumber(p)) then return v end
  return p
end

-- several payloads (buckets) as one
local function combine(fn, ps)
  local out = empty(fn)
  if fn == 'count' or fn == 'sum' then
    local total = 0
    for _, p in ipairs(ps) do total = total + tonumber(p) end
    if fn == 'count' then return fmt('%d', total) end
    return fmt('%.17g', total)
  end
  if fn == 'mean' then
    local n, s = 0, 0
    for _, p in ipairs(ps) do
      local bar = find(p, '|', 1, true)
      n = n + tonumber(sub(p, 1, bar - 1))
      s = s + tonumber(sub(p, bar + 1))
    end
    return fmt('%d', n) .. '|' .. fmt('%.17g', s)
  end
  if fn == 'min' or fn == 'max' then
    for _, p in ipairs(ps) do
      if p ~= '' and (out == '' or (fn == 'min' and tonumber(p) < tonumber(out))
                      or (fn == 'max' and tonumber(p) > tonumber(out))) then out = p end
    end
    return out
  end
  if fn == 'last' then
    local best
    for _, p in ipairs(ps) do
      if p ~= '' then
        local t = tonumber(match(p, '^(%-?%d+)|'))
        if best == nil or t >= best then best = t; out = p end
      end
    end
    return out
  end
  -- distinct_count: the union
  local seen, items = {}, {}
  for _, p in ipairs(ps) do
    local pos = (find(p, '\31', 1, true) or #p) + 1
    while pos <= #p do
      local j = find(p, '\31', pos, true)
      local item = sub(p, pos, j - 1)
      if not seen[item] then seen[item] = true; items[#items + 1] = item end
      pos = j + 1
    end
  end
  if #items == 0 then return '' end
  return fmt('%d', #items) .. '\31' .. table.concat(items, '\31') .. '\31'
end

-- the JSON value of a payload
local function final(fn, p)
  if fn == 'count' then return p end
  if fn == 'sum' then return number(tonumber(p)) end
  if fn == 'mean' then
    local bar = find(p, '|', 1, true)
    local n = tonumber(sub(p, 1, bar - 1))
    if n == 0 then return 'null' end
    return number(tonumber(sub(p, bar + 1)) / n)
  end
  if p == '' then
    if fn == 'distinct_count' then return '0' end
    return 'null'
  end
  if fn == 'last' then return sub(p, find(p, '|', 1, true) + 1) end
  if fn == 'distinct_count' then return sub(p, 1, find(p, '\31', 1, true) - 1) end
  return p
end
"""

# ARGV: marker key prefix, main hash prefix, window hash prefix, marker TTL, key TTL, number of plans P,
#   P plan JSONs, then every event in one string (one argument for the whole batch: the client's cost per
#   argument was a tenth of the feature service's CPU): per event, its event_id and its entity, each as
#   "<byte length>:<text>" (ids may hold any character), then plan index, event time ms and
#   (field name, JSON value) pairs joined by \x1e, then \x1c. Field names have no control characters
#   (schemas refuse them) and JSON values escape theirs, so neither separator occurs inside them.
#   The keys are made here from the ids (a standalone Redis; one batch touches many entities anyway).
# A plan lists the views that apply to one stream: [{"v": view, "l": lateness ms, "p": [fields] | "*",
#   "a": [{"n": name, "f": fn, "x": field?}] (whole history),
#   "g": [{"id": group, "s": step ms, "b": buckets, "a": [{"n", "f", "x"?}]}] (windows)}].
# Returns {applied, duplicates, late}.
APPLY_BATCH = _COMMON + r"""
local marker_prefix, main_prefix, window_prefix = ARGV[1], ARGV[2], ARGV[3]
local marker_ttl = tonumber(ARGV[4])
local key_ttl = tonumber(ARGV[5])
local nplans = tonumber(ARGV[6])
-- A hash's TTL is renewed when the clock has entered a new sixteenth of it since the last renewal (its
-- stamp, ``__ttl``/``__wttl`` in the main hash, read with the fields every event reads), not on every
-- event: an entity's keys live at least key_ttl after its last event, at most a sixteenth more.
local period = math.max(1, floor(key_ttl / 16))
local stamp = key_ttl > 0 and tostring(floor(tonumber(redis.call('TIME')[1]) / period)) or nil
local plans = {}
for i = 1, nplans do
  -- what does not depend on the event is made once per call: field names, and the main-hash fields
  -- every event of the plan reads (``want``, one HMGET; each view, aggregation and group knows its
  -- position in the reply)
  local views = cjson.decode(ARGV[6 + i])
  local want, windows = {'__event_time'}, false
  for _, view in ipairs(views) do
    view.wmf = '__wm:' .. view.v
    view.pp = 'p:' .. view.v .. ':'
    view.pf = {}  -- field name -> its pass-through hash field, made on first use
    want[#want + 1] = view.wmf
    view.wi = #want
    for _, agg in ipairs(view.a) do
      agg.af = 'a:' .. agg.n
      want[#want + 1] = agg.af
      agg.i = #want
    end
    for _, g in ipairs(view.g) do
      g.mf = 'm:' .. view.v .. ':' .. g.id
      g.pfx = view.v .. ':' .. g.id .. ':'
      want[#want + 1] = g.mf
      g.i = #want
      windows = true
    end
  end
  want[#want + 1] = '__ttl'
  want[#want + 1] = '__wttl'
  plans[i] = {views = views, want = want, windows = windows, ti = #want - 1}
end

local function pfield(view, name)
  local f = view.pf[name]
  if not f then
    f = view.pp .. name
    view.pf[name] = f
  end
  return f
end

-- the group's payloads after one event (vs: the event's value per aggregation, or nil)
local function step_group(g, parts, vs, t)
  local out = {}
  for i, agg in ipairs(g.a) do
    local p = parts and parts[i] or nil
    local v = vs[i]
    if v then out[i] = step(agg.f, p, v, tonumber(v), t) else out[i] = p or empty(agg.f) end
  end
  return out
end

-- a group's window state after one event, into the main hash's ``set`` and the window hash's
-- ``wset``/``wdel`` (cur: the main-hash reply; wm_new: the view's watermark after the event)
local function windows_of(view, wk, cur, fv, t, wm_new, is_late, set, wset, wdel)
  local wwant, jobs = {}, {}
  for _, g in ipairs(view.g) do
    local cnew = floor(wm_new / g.s)
    local m = cur[g.i]
    local mparts, cold = nil, nil
    if m then
      mparts = split(m, '\29')
      cold = tonumber(mparts[1])
    end
    local vs, any = {}, false
    for i, agg in ipairs(g.a) do
      local v = '1'
      if agg.x then v = fv[agg.x] end
      vs[i] = v
      if v then any = true end
    end
    local job = {g = g, cnew = cnew, vs = vs, mparts = mparts, advance = (cold == nil or cnew ~= cold)}
    local b = floor(t / g.s)
    local counts = any and (not is_late) and b > cnew - g.b
    if g.b == 1 then
      -- a window of one bucket (tumbling) is its m: field alone: no bucket in the window hash
      job.single, job.counts = true, counts
    elseif counts then
      job.bf = g.pfx .. b  -- integral floats print as integers below 1e14
      wwant[#wwant + 1] = job.bf
    end
    if job.advance and not job.single then
      local bnames = {}
      for k = cnew - g.b + 1, cnew do
        local bf = g.pfx .. k
        bnames[#bnames + 1] = bf
        wwant[#wwant + 1] = bf
      end
      job.bnames = bnames
      if cold then
        for k = cold - g.b + 1, math.min(cnew - g.b, cold) do wdel[#wdel + 1] = g.pfx .. k end
      end
    end
    jobs[#jobs + 1] = job
  end

  local wcur = {}
  if #wwant > 0 then
    local got = redis.call('HMGET', wk, unpack(wwant))
    for i, f in ipairs(wwant) do wcur[f] = got[i] end
  end
  for _, job in ipairs(jobs) do
    local g = job.g
    if job.bf then
      local old = wcur[job.bf]
      local bparts = step_group(g, old and split(old, '\29') or nil, job.vs, t)
      local payload = table.concat(bparts, '\29')
      if wset[job.bf] == nil then wset[#wset + 1] = job.bf end
      wset[job.bf] = payload
      wcur[job.bf] = payload
    end
    local mparts
    if job.single then
      if job.advance then
        mparts = step_group(g, nil, job.counts and job.vs or {}, t)
      elseif job.counts then
        local old = {}
        for i = 2, #job.mparts do old[i - 1] = job.mparts[i] end
        mparts = step_group(g, old, job.vs, t)
      end
    elseif job.advance then
      local per = {}
      for i = 1, #g.a do per[i] = {} end
      for _, bf in ipairs(job.bnames) do
        local bv = wcur[bf]
        if bv then
          for i, p in ipairs(split(bv, '\29')) do per[i][#per[i] + 1] = p end
        end
      end
      mparts = {}
      for i, agg in ipairs(g.a) do mparts[i] = combine(agg.f, per[i]) end
    elseif job.bf then
      local old = {}
      for i = 2, #job.mparts do old[i - 1] = job.mparts[i] end
      mparts = step_group(g, old, job.vs, t)
    end
    if mparts then
      set[#set + 1] = g.mf
      set[#set + 1] = job.cnew .. '\29' .. table.concat(mparts, '\29')
    end
  end
end

local blob = ARGV[7 + nplans]
local pos = 1

-- the next "<byte length>:<text>" of the blob
local function sized()
  local c = find(blob, ':', pos, true)
  local n = tonumber(sub(blob, pos, c - 1))
  pos = c + n + 1
  return sub(blob, c + 1, c + n)
end

local applied, dupes, late = 0, 0, 0
while pos <= #blob do
  local event_id = sized()
  local entity = sized()
  local at, stop = pos, find(blob, '\28', pos, true)
  pos = stop + 1
  if not redis.call('SET', marker_prefix .. event_id, '1', 'NX', 'EX', marker_ttl) then
    dupes = dupes + 1
  else
    applied = applied + 1
    -- plan index, event time, then (field name, JSON value) pairs, read in place
    local a = find(blob, '\30', at, true)
    local plan = plans[tonumber(sub(blob, at, a - 1))]
    local b = find(blob, '\30', a + 1, true)
    if not b or b > stop then b = stop end
    local tstr = sub(blob, a + 1, b - 1)
    local t = tonumber(tstr)
    local fv, names = {}, {}
    while b < stop do
      local c = find(blob, '\30', b + 1, true)
      local d = find(blob, '\30', c + 1, true)
      if not d or d > stop then d = stop end
      local name = sub(blob, b + 1, c - 1)
      fv[name] = sub(blob, c + 1, d - 1)
      names[#names + 1] = name
      b = d
    end
    local ek = main_prefix .. entity
    local views = plan.views

    -- 1. the main-hash fields every event reads, in one HMGET; pass-through fields only for a view the
    -- event is older than (a second HMGET): each one's stored time is at most the view's watermark, so an
    -- event at or after the watermark replaces them all without looking (the common, in-order case)
    local cur = redis.call('HMGET', ek, unpack(plan.want))
    local older
    for _, view in ipairs(views) do
      local wm = cur[view.wi]
      if wm and t < tonumber(wm) then
        local pnames = view.p
        if pnames == '*' then pnames = names end
        older = older or {}
        for _, name in ipairs(pnames) do
          if fv[name] then older[#older + 1] = pfield(view, name) end
        end
      end
    end
    local stored = {}
    if older and #older > 0 then
      local got = redis.call('HMGET', ek, unpack(older))
      for i, f in ipairs(older) do stored[f] = got[i] end
    end

    -- 2. watermarks, pass-through fields, aggregations, as (field, value) pairs for one HSET
    local set = {}
    local wk, wset, wdel
    if plan.windows then wk, wset, wdel = window_prefix .. entity, {}, {} end
    local was_late = false
    for _, view in ipairs(views) do
      local wm_old = cur[view.wi] and tonumber(cur[view.wi]) or nil
      local wm_new = t
      if wm_old and wm_old > t then
        wm_new = wm_old
      else
        set[#set + 1] = view.wmf
        set[#set + 1] = tstr
      end
      local is_late = wm_old ~= nil and t < wm_old - view.l
      if is_late then was_late = true end
      local pnames = view.p
      if pnames == '*' then pnames = names end
      local newest = wm_old == nil or t >= wm_old
      for _, name in ipairs(pnames) do
        local v = fv[name]
        if v then
          local f = pfield(view, name)
          local c = (not newest) and stored[f]
          if (not c) or t >= tonumber(sub(c, 1, find(c, '|', 1, true) - 1)) then
            set[#set + 1] = f
            set[#set + 1] = tstr .. '|' .. v
          end
        end
      end
      for _, agg in ipairs(view.a) do
        local v = '1'
        if agg.x then v = fv[agg.x] end
        if v then
          set[#set + 1] = agg.af
          set[#set + 1] = step(agg.f, cur[agg.i], v, tonumber(v), t)
        end
      end
      if #view.g > 0 then windows_of(view, wk, cur, fv, t, wm_new, is_late, set, wset, wdel) end
    end

    local last = cur[1] and tonumber(cur[1]) or nil
    if (not last) or t > last then
      set[#set + 1] = '__event_time'
      set[#set + 1] = tstr
    end
    if was_late then
      late = late + 1
      redis.call('HINCRBY', ek, '__late', 1)
    end
    local renew = stamp and cur[plan.ti] ~= stamp
    local wrenew = false
    if wk then
      if #wdel > 0 then redis.call('HDEL', wk, unpack(wdel)) end
      if #wset > 0 then
        local flat = {}
        for _, f in ipairs(wset) do flat[#flat + 1] = f; flat[#flat + 1] = wset[f] end
        redis.call('HSET', wk, unpack(flat))
        wrenew = stamp and cur[plan.ti + 1] ~= stamp
      end
    end
    if renew then
      set[#set + 1] = '__ttl'
      set[#set + 1] = stamp
    end
    if wrenew then
      set[#set + 1] = '__wttl'
      set[#set + 1] = stamp
    end
    if #set > 0 then redis.call('HSET', ek, unpack(set)) end
    if renew then redis.call('EXPIRE', ek, key_ttl + period) end
    if wrenew then redis.call('EXPIRE', wk, key_ttl + period) end
  end
end
return {applied, dupes, late}
"""

# KEYS: per entity, its main hash then its window hash. ARGV: now ms, then the read plan JSON:
#   {"ttl": {view: ttl ms (0: none)}, "a": [{"n": name, "v": view, "f": fn}] (whole history),
#    "g": [{"v": view, "id": group, "s": step ms, "b": buckets, "a": [{"n", "f"}]}] (windows)}.
# Returns one JSON text, an array with per entity [features object, last event time ms] or null when
# the entity has no hash (one string to move and parse, rather than two per entity).
READ = _COMMON + r"""
local now = tonumber(ARGV[1])
local plan = cjson.decode(ARGV[2])
local ttl = plan.ttl
-- JSON keys made once per call
for _, agg in ipairs(plan.a) do agg.key = cjson.encode(agg.n) .. ':' end
for _, g in ipairs(plan.g) do
  g.mf = g.v .. ':' .. g.id
  g.pfx = g.v .. ':' .. g.id .. ':'
  for _, agg in ipairs(g.a) do agg.key = cjson.encode(agg.n) .. ':' end
end

local function stale(view, updated)
  local t = ttl[view]
  return t and t > 0 and now - updated > t
end

-- what a main-hash field name means, worked out once per call (every entity has the same names):
-- {1, view, field, '"field":'} pass-through, {2, agg} whole history, {3, view:group} window,
-- {4, view} watermark, {5} last event time, {0} anything else
local kinds = {}
local function classify(name)
  local head = sub(name, 1, 2)
  if head == 'p:' then
    local c = find(name, ':', 3, true)
    local field = sub(name, c + 1)
    local key
    if find(field, '[%c"\\]') then key = cjson.encode(field) .. ':' else key = '"' .. field .. '":' end
    return {1, sub(name, 3, c - 1), field, key}
  elseif head == 'a:' then return {2, sub(name, 3)}
  elseif head == 'm:' then return {3, sub(name, 3)}
  elseif sub(name, 1, 5) == '__wm:' then return {4, sub(name, 6)}
  elseif name == '__event_time' then return {5}
  end
  return {0}
end

local out = {}
for i = 1, #KEYS, 2 do
  local ek, wk = KEYS[i], KEYS[i + 1]
  local raw = redis.call('HGETALL', ek)
  if #raw == 0 then
    out[#out + 1] = 'null'
  else
    local pass, whole, window, wm = {}, {}, {}, {}
    local event_time = false
    for j = 1, #raw, 2 do
      local name, v = raw[j], raw[j + 1]
      local kind = kinds[name]
      if kind == nil then
        kind = classify(name)
        kinds[name] = kind
      end
      local k = kind[1]
      if k == 1 then
        local bar = find(v, '|', 1, true)
        local t = tonumber(sub(v, 1, bar - 1))
        local best = pass[kind[3]]
        if not best or t > best[1] then pass[kind[3]] = {t, sub(v, bar + 1), kind[2], kind[4]} end
      elseif k == 2 then
        whole[kind[2]] = v
      elseif k == 3 then
        window[kind[2]] = v
      elseif k == 4 then
        wm[kind[2]] = tonumber(v)
      elseif k == 5 then
        event_time = v
      end
    end
    local parts = {}
    for _, best in pairs(pass) do
      local v = best[2]
      if stale(best[3], best[1]) then v = 'null' end
      parts[#parts + 1] = best[4] .. v
    end
    for _, agg in ipairs(plan.a) do
      local w = wm[agg.v]
      if w then
        local value = 'null'
        if not stale(agg.v, w) then value = final(agg.f, whole[agg.n] or empty(agg.f)) end
        parts[#parts + 1] = agg.key .. value
      end
    end
    for _, g in ipairs(plan.g) do
      local w = wm[g.v]
      if w then
        local finals = {}
        local m = window[g.mf]
        if stale(g.v, w) then
          for k = 1, #g.a do finals[k] = 'null' end
        else
          local mparts = m and split(m, '\29') or nil
          local c = mparts and tonumber(mparts[1]) or nil
          local h = floor(now / g.s)
          if c and h == c then
            for k, agg in ipairs(g.a) do finals[k] = final(agg.f, mparts[k + 1]) end
          elseif (not c) or h - g.b + 1 > c then
            for k, agg in ipairs(g.a) do finals[k] = final(agg.f, empty(agg.f)) end
          else
            -- part of the window has passed since the watermark: combine the buckets still inside it
            local fields = {}
            for k = h - g.b + 1, math.min(h, c) do fields[#fields + 1] = g.pfx .. k end
            local per = {}
            for k = 1, #g.a do per[k] = {} end
            for _, bv in ipairs(redis.call('HMGET', wk, unpack(fields))) do
              if bv then
                for k, p in ipairs(split(bv, '\29')) do per[k][#per[k] + 1] = p end
              end
            end
            for k, agg in ipairs(g.a) do finals[k] = final(agg.f, combine(agg.f, per[k])) end
          end
        end
        for k, agg in ipairs(g.a) do parts[#parts + 1] = agg.key .. finals[k] end
      end
    end
    out[#out + 1] = '[{' .. table.concat(parts, ',') .. '},' .. (event_time or 'null') .. ']'
  end
end
return '[' .. table.concat(out, ',') .. ']'
"""
