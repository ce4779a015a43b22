-- apisix.core: the module table APISIX plugins require. Each part lives in apisix/core/<name>.lua.
-- Requires the global `ngx` (moongate.ngx.install) to exist.
local log = require("apisix.core.log")

return {
    version = require("apisix.core.version"),
    log = log,
    config = require("apisix.core.config"),
    config_util = require("apisix.core.config_util"),
    sleep = function(sec)
        return ngx.sleep(sec)
    end,
    json = require("apisix.core.json"),
    table = require("apisix.core.table"),
    request = require("apisix.core.request"),
    response = require("apisix.core.response"),
    lrucache = require("apisix.core.lrucache"),
    schema = require("apisix.core.schema"),
    string = require("apisix.core.string"),
    ctx = require("apisix.core.ctx"),
    timer = require("apisix.core.timer"),
    id = require("apisix.core.id"),
    ip = require("apisix.core.ip"),
    io = require("apisix.core.io"),
    utils = require("apisix.core.utils"),
    etcd = require("apisix.core.etcd"),
    tablepool = require("apisix.core.tablepool"),
    os = require("apisix.core.os"),
    math = require("apisix.core.math"),
    env = require("apisix.core.env"),
    empty_tab = {},
}
