"""The Lua scripts the redis store runs, one atomic step each, and the value rule.

Each script is one operation of :class:`~trio_counters.stores.redis.RedisStore`
(``get``, ``set``, ``inc``, and ``seed`` for ``i`` and ``j``), sent by its SHA1
(:data:`SHA`) with its source as the fallback (:data:`SCRIPTS`). :func:`canonical`
is the API's integer rule for a value read back from Redis.
"""

from __future__ import annotations

import hashlib
import re

from .base import INT64_MAX, INT64_MIN

__all__ = ["SCRIPTS", "SHA", "canonical"]

# Each script: KEYS[1] is the hash. Each returns {HLEN, outcome, ...}, or
# {-1, 'wrongtype', type} when the key holds something other than a hash (checked
# first, so that Redis' WRONGTYPE error never gets a chance). Values go in and out
# as strings: Lua numbers are doubles and would round int64 values.
_WRONGTYPE = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then return {-1, 'wrongtype', kind} end
"""

_GET = _WRONGTYPE + """
local value = redis.call('HGET', KEYS[1], ARGV[1])
local n = redis.call('HLEN', KEYS[1])
if value then return {n, 'ok', value} end
return {n, 'missing'}
"""

# ARGV: name, value, max_counters
_SET = _WRONGTYPE + """
local n = redis.call('HLEN', KEYS[1])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  if n >= tonumber(ARGV[3]) then return {n, 'full'} end
  n = n + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {n, 'ok'}
"""

# The value must follow the API's rule, as _canonical() below: '0', or an optional
# '-' and digits with no leading zero, within int64 -- compared byte by byte, not
# with Lua's '<=', which follows Redis' locale. HINCRBY would take some values the
# API refuses (past int64 it refuses them, as a generic error), and must never see them.
# HINCRBY refuses overflow itself ("increment or decrement would overflow") and
# then changes nothing; pcall turns that refusal into an answer.
_INC = _WRONGTYPE + """
local function canonical(value)
  if value == '0' then return true end
  local digits, limit = value, '9223372036854775807'
  if string.sub(value, 1, 1) == '-' then
    digits, limit = string.sub(value, 2), '9223372036854775808'
  end
  if not string.find(digits, '^[1-9][0-9]*$') or #digits > #limit then return false end
  if #digits < #limit then return true end
  for k = 1, #limit do
    local a, b = string.byte(digits, k), string.byte(limit, k)
    if a ~= b then return a < b end
  end
  return true
end
local n = redis.call('HLEN', KEYS[1])
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return {n, 'missing'} end
if not canonical(value) then return {n, 'corrupt', value} end
local result = redis.pcall('HINCRBY', KEYS[1], ARGV[1], 1)
if type(result) == 'table' and result.err then return {n, 'refused', value, result.err} end
return {n, 'ok'}
"""

# ARGV: max_counters, then the names to create at 0 if absent.
# Returns {HLEN, names left out because the hash was full...}.
_SEED = _WRONGTYPE + """
local n = redis.call('HLEN', KEYS[1])
local limit = tonumber(ARGV[1])
local left_out = {}
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    if n < limit then
      redis.call('HSET', KEYS[1], ARGV[i], '0')
      n = n + 1
    else
      table.insert(left_out, ARGV[i])
    end
  end
end
return {n, unpack(left_out)}
"""

SCRIPTS = {"get": _GET, "set": _SET, "inc": _INC, "seed": _SEED}
SHA = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}

# The API's integer rule for stored values, in canonical form (str(int) gives it).
_CANONICAL = re.compile(r"0|-?[1-9][0-9]{0,18}")


def canonical(stored: object) -> int | None:
    """The value as an int if it is one the API could have stored, else None."""
    if not isinstance(stored, str) or _CANONICAL.fullmatch(stored) is None:
        return None  # bytes: not even UTF-8
    value = int(stored)
    return value if INT64_MIN <= value <= INT64_MAX else None
