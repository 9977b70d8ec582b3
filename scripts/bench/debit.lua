-- wrk: one-credit admin debits, each with a fresh Idempotency-Key, on an account picked at
-- random from a file of account ids (one id: the hot account).
--   wrk ... -s scripts/bench/debit.lua BASE -- ADMIN_TOKEN KEY_PREFIX IDS_FILE
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end

local token, prefix, ids
local counter = 0
function init(args)
    token, prefix = args[1], args[2]
    ids = {}
    for line in io.lines(args[3]) do ids[#ids + 1] = line end
    math.randomseed(tid * 7919)
end

function request()
    counter = counter + 1
    local id = ids[math.random(#ids)]
    return wrk.format("POST", "/admin/v1/accounts/" .. id .. "/debits", {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. token,
        ["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter,
    }, '{"amount":1,"description":"bench debit"}')
end
