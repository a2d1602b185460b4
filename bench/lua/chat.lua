-- Non-streaming chat completion (model "bench"), one small JSON body per request.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local model = os.getenv("BENCH_MODEL") or "bench"

common.setup('{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello."}],'
  .. '"max_tokens":16}')
done = common.done
