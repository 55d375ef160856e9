-- wrk: every request is a new upload of one student (the template's @KEY@ becomes a key no
-- request used before; LB_PREFIX tells two runs apart), so each is validated, its ratio recomputed and stored, never a replay.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  local f = assert(io.open(os.getenv("LB_TEMPLATE")))
  template = f:read("*a")
  f:close()
  path = os.getenv("LB_PATH")
  headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("LB_TOKEN") }
  prefix = os.getenv("LB_PREFIX") or "bench"
  counter = 0
end

function request()
  counter = counter + 1
  local body = template:gsub("@KEY@", string.format("%s-%d-%010d", prefix, id, counter))
  return wrk.format("POST", path, headers, body)
end
