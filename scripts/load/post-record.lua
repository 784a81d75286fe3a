-- wrk script: POST /records with a distinct small JSON body per request.
-- Prints one RESULT line (req/s, p50, p99 in ms, failures) when done.
-- With a file prefix as script argument (`-- /tmp/acked`), each thread
-- also writes the ids of acknowledged (201) records to PREFIX.<thread>.

local threads = {}
local counter = 0
local acked = nil

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_no", #threads)
end

function init(args)
   if args[1] ~= nil then
      acked = io.open(args[1] .. "." .. thread_no, "w")
      -- Line-buffered: ids survive the service (and wrk) being killed.
      acked:setvbuf("line")
   end
end

local headers = { ["Content-Type"] = "application/json" }

function request()
   counter = counter + 1
   local body = string.format(
      '{"name":"load-%d-%d","payload":"load test payload %d from thread %d"}',
      thread_no, counter, counter, thread_no)
   return wrk.format("POST", "/records", headers, body)
end

function response(status, _, body)
   if acked ~= nil and status == 201 then
      local id = string.match(body, '"id":(%d+)')
      if id ~= nil then
         acked:write(id, "\n")
      end
   end
end

function done(summary, latency, _)
   local seconds = summary.duration / 1e6
   local socket_errors = summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout
   io.write(string.format(
      "RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d non2xx=%d socket_errors=%d\n",
      summary.requests / seconds,
      latency:percentile(50) / 1000,
      latency:percentile(99) / 1000,
      summary.requests, summary.errors.status, socket_errors))
end
