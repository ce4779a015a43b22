//! `ngx.re` over `fancy-regex` (backtracking, PCRE-like: lookaround and backreferences work).
//!
//! Natives (positions are 1-based byte offsets, as in ngx):
//! * `re_match(subject, regex, opts, init)` -> `captures, next_pos` | `nil` | `nil, err`. `captures[0]` is
//!   the whole match, `[1..n]` the groups (`false` when a group did not take part), named groups are
//!   also stored by name. `next_pos` is the position after the match (what ngx stores in `ctx.pos`).
//! * `re_find(subject, regex, opts, init, nth)` -> `from, to` (inclusive; `to = from - 1` for an empty
//!   match) | `nil` | `nil, err`. With `nth > 0` the positions of that group.
//! * `re_gmatch(subject, regex, opts)` -> iterator function returning captures tables, then `nil`.
//! * `re_sub`/`re_gsub(subject, regex, replace, opts)` -> `new, n` | `nil, err`. `replace` is a template
//!   (`$0`, `$1`, `${1}`, `${name}`, `$$`) or a function receiving the captures table.
//!
//! Flags: `i` case-insensitive, `m` multi-line, `s` dot matches newline, `x` extended, `a` anchored at
//! the start position; `j`, `o`, `u`, `U`, `d`, `D`, `J` are accepted and ignored (patterns are always
//! cached, the engine is always UTF-8). Any other flag raises `unknown flag "<c>"`.
//!
//! Differences from PCRE: subjects must be valid UTF-8 (`nil, err` otherwise); `.`, `\w` and `\d` are
//! Unicode-aware; duplicate group names are rejected. After an empty match the next search starts one
//! character later (PCRE retries the same position for a non-empty match first).
//!
//! Compiled patterns are cached per VM (the closures share one cache) keyed by pattern and flags; the
//! cache is cleared when it reaches [`MAX_CACHED`] entries.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use fancy_regex::{Captures, Regex, RegexBuilder};
use mlua::{ExternalError as _, Function, Lua, LuaString, Table, Value};

/// Compiled patterns kept per VM before the cache is reset.
pub(crate) const MAX_CACHED: usize = 1024;

/// Errors returned to Lua as `nil, err` (except [`RegexError::UnknownFlag`], which raises).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegexError {
    /// An option letter ngx does not know.
    #[error("unknown flag \"{flag}\" (flags \"{flags}\")")]
    UnknownFlag {
        /// The offending letter.
        flag: char,
        /// The whole option string.
        flags: String,
    },
    /// The pattern does not compile.
    #[error("failed to compile regex \"{pattern}\": {reason}")]
    Compile {
        /// The pattern.
        pattern: String,
        /// The compiler's message.
        reason: String,
    },
    /// The pattern or the subject is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Matching failed (backtracking limit).
    #[error("regex match failed: {0}")]
    Match(String),
    /// A bad `$` reference in a replacement template.
    #[error("invalid capturing variable name in replace template: {0}")]
    Template(String),
    /// A replacement function returned something that is not a string or a number.
    #[error("attempt to use {0} as a replacement")]
    Replacement(&'static str),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct Flags {
    caseless: bool,
    multiline: bool,
    dotall: bool,
    extended: bool,
    anchored: bool,
}

impl Flags {
    fn parse(opts: &[u8]) -> Result<Self, RegexError> {
        let mut f = Flags::default();
        for &c in opts {
            match c {
                b'i' => f.caseless = true,
                b'm' => f.multiline = true,
                b's' => f.dotall = true,
                b'x' => f.extended = true,
                b'a' => f.anchored = true,
                b'j' | b'o' | b'u' | b'U' | b'd' | b'D' | b'J' => {}
                other => {
                    return Err(RegexError::UnknownFlag {
                        flag: char::from(other),
                        flags: String::from_utf8_lossy(opts).into_owned(),
                    });
                }
            }
        }
        Ok(f)
    }

    fn bits(self) -> u8 {
        u8::from(self.caseless)
            | u8::from(self.multiline) << 1
            | u8::from(self.dotall) << 2
            | u8::from(self.extended) << 3
            | u8::from(self.anchored) << 4
    }
}

/// A compiled pattern with its group names.
#[derive(Debug)]
pub(crate) struct Compiled {
    re: Regex,
    names: Vec<(usize, String)>,
    anchored: bool,
}

/// The per-VM cache of compiled patterns.
#[derive(Debug, Default)]
pub(crate) struct RegexCache {
    map: HashMap<Box<str>, Vec<(u8, Rc<Compiled>)>>,
    len: usize,
}

impl RegexCache {
    fn get(&mut self, pattern: &str, flags: Flags) -> Result<Rc<Compiled>, RegexError> {
        let bits = flags.bits();
        if let Some(list) = self.map.get(pattern)
            && let Some((_, c)) = list.iter().find(|(b, _)| *b == bits)
        {
            return Ok(Rc::clone(c));
        }
        let re = RegexBuilder::new(pattern)
            .case_insensitive(flags.caseless)
            .multi_line(flags.multiline)
            .dot_matches_new_line(flags.dotall)
            .ignore_whitespace(flags.extended)
            .build()
            .map_err(|e| RegexError::Compile {
                pattern: pattern.to_owned(),
                reason: e.to_string(),
            })?;
        let names = re
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.to_owned())))
            .collect();
        let compiled = Rc::new(Compiled {
            re,
            names,
            anchored: flags.anchored,
        });
        if self.len >= MAX_CACHED {
            self.map.clear();
            self.len = 0;
        }
        self.len += 1;
        self.map
            .entry(pattern.into())
            .or_default()
            .push((bits, Rc::clone(&compiled)));
        Ok(compiled)
    }
}

type Shared = Rc<RefCell<RegexCache>>;

fn compile(
    cache: &Shared,
    regex: &LuaString,
    opts: Option<&LuaString>,
) -> mlua::Result<Result<Rc<Compiled>, RegexError>> {
    let flags = match opts {
        Some(o) => Flags::parse(&o.as_bytes()).map_err(|e| e.into_lua_err())?,
        None => Flags::default(),
    };
    let Ok(pattern) = regex.to_str() else {
        return Ok(Err(RegexError::Utf8("regex")));
    };
    Ok(cache.borrow_mut().get(&pattern, flags))
}

/// Next char boundary strictly after `pos` (or `len + 1` at the end).
fn next_pos(s: &str, pos: usize) -> usize {
    s[pos..]
        .chars()
        .next()
        .map_or(pos + 1, |c| pos + c.len_utf8())
}

/// Converts a 1-based `init` into a byte offset on a char boundary, or `None` past the end.
fn start_offset(s: &str, init: Option<i64>) -> Option<usize> {
    let init = init.unwrap_or(1).max(1);
    let mut pos = usize::try_from(init - 1).ok()?;
    if pos > s.len() {
        return None;
    }
    while !s.is_char_boundary(pos) {
        pos += 1;
    }
    Some(pos)
}

/// Finds the next match at or after `pos`, honouring the anchored flag.
fn search<'t>(c: &Compiled, s: &'t str, pos: usize) -> Result<Option<Captures<'t>>, RegexError> {
    let caps =
        c.re.captures_from_pos(s, pos)
            .map_err(|e| RegexError::Match(e.to_string()))?;
    Ok(caps.filter(|caps| !c.anchored || caps.get(0).is_some_and(|m| m.start() == pos)))
}

fn captures_table(lua: &Lua, c: &Compiled, caps: &Captures<'_>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(caps.len(), c.names.len())?;
    for i in 0..caps.len() {
        match caps.get(i) {
            Some(m) => t.raw_set(i, m.as_str())?,
            None => t.raw_set(i, false)?,
        }
    }
    for (i, name) in &c.names {
        match caps.get(*i) {
            Some(m) => t.raw_set(name.as_str(), m.as_str())?,
            None => t.raw_set(name.as_str(), false)?,
        }
    }
    Ok(t)
}

fn err_pair(lua: &Lua, err: RegexError) -> mlua::Result<(Value, Value)> {
    Ok((
        Value::Nil,
        Value::String(lua.create_string(err.to_string())?),
    ))
}

#[derive(Debug)]
enum Piece {
    Literal(String),
    Group(usize),
    Named(String),
}

fn parse_template(t: &str) -> Result<Vec<Piece>, RegexError> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = t.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        if ch != '$' {
            lit.push(ch);
            continue;
        }
        match chars.peek().copied() {
            Some((_, '$')) => {
                chars.next();
                lit.push('$');
            }
            Some((_, d)) if d.is_ascii_digit() => {
                let mut n = 0usize;
                while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                    n = n
                        .saturating_mul(10)
                        .saturating_add(d as usize - '0' as usize);
                    chars.next();
                }
                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                pieces.push(Piece::Group(n));
            }
            Some((start, '{')) => {
                chars.next();
                let rest = &t[start + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(RegexError::Template(t[i..].to_owned()));
                };
                let name = &rest[..end];
                if name.is_empty() {
                    return Err(RegexError::Template(t[i..].to_owned()));
                }
                for _ in 0..name.chars().count() + 1 {
                    chars.next();
                }
                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                match name.parse::<usize>() {
                    Ok(n) => pieces.push(Piece::Group(n)),
                    Err(_) => pieces.push(Piece::Named(name.to_owned())),
                }
            }
            _ => return Err(RegexError::Template(t[i..].to_owned())),
        }
    }
    pieces.push(Piece::Literal(lit));
    pieces.retain(|p| !matches!(p, Piece::Literal(l) if l.is_empty()));
    Ok(pieces)
}

enum Replace {
    Template(Vec<Piece>),
    Function(Function),
}

fn substitute(
    lua: &Lua,
    c: &Compiled,
    subject: &str,
    replace: &Replace,
    global: bool,
) -> mlua::Result<Result<(Vec<u8>, usize), RegexError>> {
    let mut out: Vec<u8> = Vec::with_capacity(subject.len());
    let mut last = 0;
    let mut pos = 0;
    let mut n = 0;
    while pos <= subject.len() {
        let caps = match search(c, subject, pos) {
            Ok(Some(caps)) => caps,
            Ok(None) => break,
            Err(e) => return Ok(Err(e)),
        };
        let Some(m) = caps.get(0) else { break };
        out.extend_from_slice(&subject.as_bytes()[last..m.start()]);
        match replace {
            Replace::Template(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Literal(l) => out.extend_from_slice(l.as_bytes()),
                        Piece::Group(i) => {
                            if let Some(g) = caps.get(*i) {
                                out.extend_from_slice(g.as_str().as_bytes());
                            }
                        }
                        Piece::Named(name) => match caps.name(name) {
                            Some(g) => out.extend_from_slice(g.as_str().as_bytes()),
                            None if c.names.iter().any(|(_, n)| n == name) => {}
                            None => return Ok(Err(RegexError::Template(format!("${{{name}}}")))),
                        },
                    }
                }
            }
            Replace::Function(f) => {
                let t = captures_table(lua, c, &caps)?;
                match f.call::<Value>(t)? {
                    Value::String(s) => out.extend_from_slice(&s.as_bytes()),
                    Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
                    Value::Number(x) => {
                        out.extend_from_slice(super::json::format_g14(x).as_bytes());
                    }
                    other => return Ok(Err(RegexError::Replacement(other.type_name()))),
                }
            }
        }
        n += 1;
        last = m.end();
        if !global {
            break;
        }
        pos = if m.start() == m.end() {
            next_pos(subject, m.end())
        } else {
            m.end()
        };
    }
    out.extend_from_slice(&subject.as_bytes()[last.min(subject.len())..]);
    Ok(Ok((out, n)))
}

fn sub_function(lua: &Lua, cache: Shared, global: bool) -> mlua::Result<Function> {
    lua.create_function(
        move |lua,
              (subject, regex, replace, opts): (
            LuaString,
            LuaString,
            Value,
            Option<LuaString>,
        )| {
            let c = match compile(&cache, &regex, opts.as_ref())? {
                Ok(c) => c,
                Err(e) => return err_pair(lua, e),
            };
            let replace = match replace {
                Value::Function(f) => Replace::Function(f),
                Value::String(s) => match s.to_str() {
                    Ok(t) => match parse_template(&t) {
                        Ok(p) => Replace::Template(p),
                        Err(e) => return err_pair(lua, e),
                    },
                    Err(_) => return err_pair(lua, RegexError::Utf8("replace template")),
                },
                Value::Integer(i) => Replace::Template(vec![Piece::Literal(i.to_string())]),
                Value::Number(x) => {
                    Replace::Template(vec![Piece::Literal(super::json::format_g14(x))])
                }
                other => return err_pair(lua, RegexError::Replacement(other.type_name())),
            };
            let Ok(subject) = subject.to_str() else {
                return err_pair(lua, RegexError::Utf8("subject"));
            };
            match substitute(lua, &c, &subject, &replace, global)? {
                Ok((out, n)) => Ok((Value::String(lua.create_string(out)?), Value::Integer(n as _))),
                Err(e) => err_pair(lua, e),
            }
        },
    )
}

/// Registers `re_match`, `re_find`, `re_gmatch`, `re_sub` and `re_gsub` sharing one pattern cache.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    let cache: Shared = Rc::default();

    let c = Rc::clone(&cache);
    native.set(
        "re_match",
        lua.create_function(
            move |lua,
                  (subject, regex, opts, init): (
                LuaString,
                LuaString,
                Option<LuaString>,
                Option<i64>,
            )| {
                let compiled = match compile(&c, &regex, opts.as_ref())? {
                    Ok(x) => x,
                    Err(e) => return err_pair(lua, e),
                };
                let Ok(s) = subject.to_str() else {
                    return err_pair(lua, RegexError::Utf8("subject"));
                };
                let Some(pos) = start_offset(&s, init) else {
                    return Ok((Value::Nil, Value::Nil));
                };
                match search(&compiled, &s, pos) {
                    Ok(Some(caps)) => {
                        let end = caps.get(0).map_or(pos, |m| m.end());
                        let t = captures_table(lua, &compiled, &caps)?;
                        Ok((Value::Table(t), Value::Integer((end + 1) as _)))
                    }
                    Ok(None) => Ok((Value::Nil, Value::Nil)),
                    Err(e) => err_pair(lua, e),
                }
            },
        )?,
    )?;

    let c = Rc::clone(&cache);
    native.set(
        "re_find",
        lua.create_function(
            move |lua,
                  (subject, regex, opts, init, nth): (
                LuaString,
                LuaString,
                Option<LuaString>,
                Option<i64>,
                Option<i64>,
            )| {
                let compiled = match compile(&c, &regex, opts.as_ref())? {
                    Ok(x) => x,
                    Err(e) => return err_pair(lua, e),
                };
                let Ok(s) = subject.to_str() else {
                    return err_pair(lua, RegexError::Utf8("subject"));
                };
                let Some(pos) = start_offset(&s, init) else {
                    return Ok((Value::Nil, Value::Nil));
                };
                let nth = usize::try_from(nth.unwrap_or(0)).unwrap_or(0);
                match search(&compiled, &s, pos) {
                    Ok(Some(caps)) => match caps.get(nth) {
                        Some(m) => Ok((
                            Value::Integer((m.start() + 1) as _),
                            Value::Integer(m.end() as _),
                        )),
                        None => Ok((Value::Nil, Value::Nil)),
                    },
                    Ok(None) => Ok((Value::Nil, Value::Nil)),
                    Err(e) => err_pair(lua, e),
                }
            },
        )?,
    )?;

    let c = Rc::clone(&cache);
    native.set(
        "re_gmatch",
        lua.create_function(
            move |lua, (subject, regex, opts): (LuaString, LuaString, Option<LuaString>)| {
                let compiled = match compile(&c, &regex, opts.as_ref())? {
                    Ok(x) => x,
                    Err(e) => return err_pair(lua, e),
                };
                let Ok(s) = subject.to_str() else {
                    return err_pair(lua, RegexError::Utf8("subject"));
                };
                let subject: String = s.to_owned();
                let mut pos = 0usize;
                let mut done = false;
                let iter = lua.create_function_mut(move |lua, ()| {
                    if done || pos > subject.len() {
                        done = true;
                        return Ok((Value::Nil, Value::Nil));
                    }
                    match search(&compiled, &subject, pos) {
                        Ok(Some(caps)) => {
                            let (start, end) =
                                caps.get(0).map_or((pos, pos), |m| (m.start(), m.end()));
                            pos = if start == end {
                                next_pos(&subject, end)
                            } else {
                                end
                            };
                            if compiled.anchored {
                                // An anchored global match must continue where the last one ended.
                                done = start == end;
                            }
                            Ok((
                                Value::Table(captures_table(lua, &compiled, &caps)?),
                                Value::Nil,
                            ))
                        }
                        Ok(None) => {
                            done = true;
                            Ok((Value::Nil, Value::Nil))
                        }
                        Err(e) => {
                            done = true;
                            err_pair(lua, e)
                        }
                    }
                })?;
                Ok((Value::Function(iter), Value::Nil))
            },
        )?,
    )?;

    native.set("re_sub", sub_function(lua, Rc::clone(&cache), false)?)?;
    native.set("re_gsub", sub_function(lua, cache, true)?)?;
    Ok(())
}
