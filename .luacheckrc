-- luacheck configuration for plugins/ and lua/ (run by scripts/test.sh).
std = "luajit"
globals = { "ngx" }
max_line_length = 120
