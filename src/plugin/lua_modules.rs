//! The Lua runtime in `lua/`, embedded in the binary: (module name, path under `lua/`, source).
//! A test walks `lua/` and fails when a file is missing from this table.

/// Every runtime module: name, path below `lua/`, source.
pub(crate) const MODULES: &[(&str, &str, &str)] = &[
    (
        "apisix.core",
        "apisix/core.lua",
        include_str!("../../lua/apisix/core.lua"),
    ),
    (
        "apisix.core.config",
        "apisix/core/config.lua",
        include_str!("../../lua/apisix/core/config.lua"),
    ),
    (
        "apisix.core.config_util",
        "apisix/core/config_util.lua",
        include_str!("../../lua/apisix/core/config_util.lua"),
    ),
    (
        "apisix.core.ctx",
        "apisix/core/ctx.lua",
        include_str!("../../lua/apisix/core/ctx.lua"),
    ),
    (
        "apisix.core.env",
        "apisix/core/env.lua",
        include_str!("../../lua/apisix/core/env.lua"),
    ),
    (
        "apisix.core.etcd",
        "apisix/core/etcd.lua",
        include_str!("../../lua/apisix/core/etcd.lua"),
    ),
    (
        "apisix.core.id",
        "apisix/core/id.lua",
        include_str!("../../lua/apisix/core/id.lua"),
    ),
    (
        "apisix.core.io",
        "apisix/core/io.lua",
        include_str!("../../lua/apisix/core/io.lua"),
    ),
    (
        "apisix.core.ip",
        "apisix/core/ip.lua",
        include_str!("../../lua/apisix/core/ip.lua"),
    ),
    (
        "apisix.core.json",
        "apisix/core/json.lua",
        include_str!("../../lua/apisix/core/json.lua"),
    ),
    (
        "apisix.core.log",
        "apisix/core/log.lua",
        include_str!("../../lua/apisix/core/log.lua"),
    ),
    (
        "apisix.core.lrucache",
        "apisix/core/lrucache.lua",
        include_str!("../../lua/apisix/core/lrucache.lua"),
    ),
    (
        "apisix.core.math",
        "apisix/core/math.lua",
        include_str!("../../lua/apisix/core/math.lua"),
    ),
    (
        "apisix.core.os",
        "apisix/core/os.lua",
        include_str!("../../lua/apisix/core/os.lua"),
    ),
    (
        "apisix.core.request",
        "apisix/core/request.lua",
        include_str!("../../lua/apisix/core/request.lua"),
    ),
    (
        "apisix.core.response",
        "apisix/core/response.lua",
        include_str!("../../lua/apisix/core/response.lua"),
    ),
    (
        "apisix.core.schema",
        "apisix/core/schema.lua",
        include_str!("../../lua/apisix/core/schema.lua"),
    ),
    (
        "apisix.core.string",
        "apisix/core/string.lua",
        include_str!("../../lua/apisix/core/string.lua"),
    ),
    (
        "apisix.core.table",
        "apisix/core/table.lua",
        include_str!("../../lua/apisix/core/table.lua"),
    ),
    (
        "apisix.core.tablepool",
        "apisix/core/tablepool.lua",
        include_str!("../../lua/apisix/core/tablepool.lua"),
    ),
    (
        "apisix.core.timer",
        "apisix/core/timer.lua",
        include_str!("../../lua/apisix/core/timer.lua"),
    ),
    (
        "apisix.core.utils",
        "apisix/core/utils.lua",
        include_str!("../../lua/apisix/core/utils.lua"),
    ),
    (
        "apisix.core.version",
        "apisix/core/version.lua",
        include_str!("../../lua/apisix/core/version.lua"),
    ),
    (
        "apisix.plugin",
        "apisix/plugin.lua",
        include_str!("../../lua/apisix/plugin.lua"),
    ),
    ("cjson", "cjson.lua", include_str!("../../lua/cjson.lua")),
    (
        "cjson.safe",
        "cjson/safe.lua",
        include_str!("../../lua/cjson/safe.lua"),
    ),
    (
        "moongate.cjson",
        "moongate/cjson.lua",
        include_str!("../../lua/moongate/cjson.lua"),
    ),
    (
        "moongate.hasher",
        "moongate/hasher.lua",
        include_str!("../../lua/moongate/hasher.lua"),
    ),
    (
        "moongate.host",
        "moongate/host.lua",
        include_str!("../../lua/moongate/host.lua"),
    ),
    (
        "moongate.limits",
        "moongate/limits.lua",
        include_str!("../../lua/moongate/limits.lua"),
    ),
    (
        "moongate.memo",
        "moongate/memo.lua",
        include_str!("../../lua/moongate/memo.lua"),
    ),
    (
        "moongate.ngx",
        "moongate/ngx.lua",
        include_str!("../../lua/moongate/ngx.lua"),
    ),
    (
        "net.url",
        "net/url.lua",
        include_str!("../../lua/net/url.lua"),
    ),
    (
        "ngx.base64",
        "ngx/base64.lua",
        include_str!("../../lua/ngx/base64.lua"),
    ),
    (
        "ngx.process",
        "ngx/process.lua",
        include_str!("../../lua/ngx/process.lua"),
    ),
    ("ngx.re", "ngx/re.lua", include_str!("../../lua/ngx/re.lua")),
    (
        "pl.path",
        "pl/path.lua",
        include_str!("../../lua/pl/path.lua"),
    ),
    (
        "pl.stringx",
        "pl/stringx.lua",
        include_str!("../../lua/pl/stringx.lua"),
    ),
    (
        "resty.core.base64",
        "resty/core/base64.lua",
        include_str!("../../lua/resty/core/base64.lua"),
    ),
    (
        "resty.expr.v1",
        "resty/expr/v1.lua",
        include_str!("../../lua/resty/expr/v1.lua"),
    ),
    (
        "resty.hmac",
        "resty/hmac.lua",
        include_str!("../../lua/resty/hmac.lua"),
    ),
    (
        "resty.http",
        "resty/http.lua",
        include_str!("../../lua/resty/http.lua"),
    ),
    (
        "resty.jit-uuid",
        "resty/jit-uuid.lua",
        include_str!("../../lua/resty/jit-uuid.lua"),
    ),
    (
        "resty.lrucache",
        "resty/lrucache.lua",
        include_str!("../../lua/resty/lrucache.lua"),
    ),
    (
        "resty.md5",
        "resty/md5.lua",
        include_str!("../../lua/resty/md5.lua"),
    ),
    (
        "resty.random",
        "resty/random.lua",
        include_str!("../../lua/resty/random.lua"),
    ),
    (
        "resty.sha1",
        "resty/sha1.lua",
        include_str!("../../lua/resty/sha1.lua"),
    ),
    (
        "resty.sha224",
        "resty/sha224.lua",
        include_str!("../../lua/resty/sha224.lua"),
    ),
    (
        "resty.sha256",
        "resty/sha256.lua",
        include_str!("../../lua/resty/sha256.lua"),
    ),
    (
        "resty.sha384",
        "resty/sha384.lua",
        include_str!("../../lua/resty/sha384.lua"),
    ),
    (
        "resty.sha512",
        "resty/sha512.lua",
        include_str!("../../lua/resty/sha512.lua"),
    ),
    (
        "resty.string",
        "resty/string.lua",
        include_str!("../../lua/resty/string.lua"),
    ),
];

#[cfg(test)]
mod tests {
    use super::MODULES;

    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "lua")
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_file_under_lua_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        let embedded: Vec<&str> = MODULES.iter().map(|(_, path, _)| *path).collect();
        for file in &files {
            assert!(
                embedded.contains(&file.as_str()),
                "lua/{file} is not in MODULES"
            );
        }
        assert_eq!(files.len(), MODULES.len());
    }

    #[test]
    fn module_names_follow_their_paths() {
        for (module, path, _) in MODULES {
            let expected = path
                .trim_end_matches(".lua")
                .trim_end_matches("/init")
                .replace('/', ".");
            assert_eq!(*module, expected);
        }
    }
}
