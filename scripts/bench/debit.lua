-- wrk: one-credit admin debits, each with a fresh Idempotency-Key, on an account picked at
-- random from a file of account ids (one id: the hot account).
--   wrk ... -s scripts/bench/debit.lua BASE -- ADMIN_TOKEN KEY_PREFIX IDS_FILE
dofile("scripts/bench/common.lua")

local token, prefix, ids
local counter = 0
function init(args)
    token, prefix = args[1], args[2]
    ids = {}
    for line in io.lines(args[3]) do ids[#ids + 1] = line end
    seed_thread()
end

function request()
    counter = counter + 1
    local id = ids[math.random(#ids)]
    return admin_post(token, "/admin/v1/accounts/" .. id .. "/debits",
        '{"amount":1,"description":"bench debit"}',
        { ["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter })
end
