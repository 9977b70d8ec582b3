-- wrk: the hold-then-capture mix on one account. A connection either places a 2-credit hold
-- (fresh Idempotency-Key) or settles one its thread placed before: 70 % captured in full,
-- 10 % captured in part (1 credit), 20 % released.
--   wrk ... -s scripts/bench/holds.lua BASE -- ADMIN_TOKEN KEY_PREFIX ACCOUNT_ID
dofile("scripts/bench/common.lua")

local token, prefix, account
local counter = 0
local pending = {}
function init(args)
    token, prefix, account = args[1], args[2], args[3]
    seed_thread()
end

local function post(path, body, extra)
    return admin_post(token, path, body, extra)
end

function request()
    counter = counter + 1
    local hold = table.remove(pending)
    if hold == nil then
        return post("/admin/v1/accounts/" .. account .. "/holds",
            '{"amount":2,"description":"bench hold"}',
            { ["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter })
    end
    local r = math.random(10)
    if r <= 7 then
        return post("/admin/v1/holds/" .. hold .. "/capture", "{}")
    elseif r == 8 then
        return post("/admin/v1/holds/" .. hold .. "/capture", '{"amount":1}')
    end
    return post("/admin/v1/holds/" .. hold .. "/release", "")
end

-- A new hold answers 201; a settlement answers 200 with the same shape, so only 201 counts.
function response(status, headers, body)
    if status ~= 201 then return end
    local hold = body:match('"holdId"%s*:%s*"([^"]+)"')
    if hold then pending[#pending + 1] = hold end
end
