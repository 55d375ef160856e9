-- wrk: every request is a new upload of one student (the template's @KEY@ becomes a key no
-- request used before; LB_PREFIX tells two runs apart), so each is validated, its ratio
-- recomputed and stored, never a replay. LB_DELAY_MS paces each connection (20 on one
-- connection: about 50 uploads/s); LB_MAX stops the thread after that many answers.
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
  pause = tonumber(os.getenv("LB_DELAY_MS") or "0")
  max = tonumber(os.getenv("LB_MAX") or "0")
  counter = 0
  answers = 0
end

function request()
  counter = counter + 1
  local body = template:gsub("@KEY@", string.format("%s-%d-%010d", prefix, id, counter))
  return wrk.format("POST", path, headers, body)
end

function delay()
  return pause
end

function response(status, headers, body)
  answers = answers + 1
  if max > 0 and answers >= max then
    wrk.thread:stop()
  end
end
