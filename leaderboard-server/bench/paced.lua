-- wrk: GET the URL given on the command line, each connection pausing LB_DELAY_MS between
-- requests (10 connections x 10 ms: at most about 1,000 requests/s).
function init(args)
  pause = tonumber(os.getenv("LB_DELAY_MS") or "0")
end

function delay()
  return pause
end
