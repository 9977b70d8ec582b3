-- What the wrk scripts share (loaded with dofile, paths relative to the repository root,
-- where bench-api.sh runs wrk): each thread's number `tid` (for unique idempotency keys
-- and its random seed) and an admin POST with the bearer token.
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end

-- Seeds the thread's random numbers from its number.
function seed_thread()
    math.randomseed(tid * 7919)
end

-- A POST of `body` to `path` as the admin `token`, with any `extra` headers.
function admin_post(token, path, body, extra)
    local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
    for k, v in pairs(extra or {}) do headers[k] = v end
    return wrk.format("POST", path, headers, body)
end
