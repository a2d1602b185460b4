-- Streaming chat completion (model "bench": the mock sends 20 SSE chunks then [DONE] at once).
-- wrk times the whole response, i.e. until the final chunk of the chunked body.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local model = os.getenv("BENCH_MODEL") or "bench"

common.setup('{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello."}],'
  .. '"max_tokens":16,"stream":true}')
done = common.done
