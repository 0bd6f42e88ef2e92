-- wrk script: cycles through a list of request paths, optionally each with its own
-- If-None-Match value. Used by benches/load.sh for every load row.
--
--   wrk ... -s rotate.lua http://127.0.0.1:PORT -- LIST_FILE PREFIX
--
-- LIST_FILE has one request a line: `path` or `path<TAB>etag` (the ETag exactly as the server
-- sent it, quotes included). PREFIX is put in front of every path (e.g. `/crates-io/index/`).
-- Every request string is built once per thread in init(), so the hot loop only indexes a
-- table. Threads start at different offsets so they do not walk the list in lockstep.

local reqs = {}
local n = 0
local i = 0

local threads = 0
function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

function init(args)
  local list, prefix = args[1], args[2] or ""
  local f = assert(io.open(list, "r"), "cannot open " .. tostring(list))
  for line in f:lines() do
    local path, etag = line:match("^([^\t]+)\t?(.*)$")
    if path and path ~= "" then
      local headers = {}
      if etag and etag ~= "" then
        headers["If-None-Match"] = etag
      end
      n = n + 1
      reqs[n] = wrk.format("GET", prefix .. path, headers)
    end
  end
  f:close()
  assert(n > 0, "no requests in " .. list)
  i = (offset or 0) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end
