//! A JSON Schema (draft 4, plus the draft 6/7 keywords APISIX plugins use) validator that behaves like
//! api7/jsonschema 0.9, the validator behind APISIX's `core.schema.check`.
//!
//! Two things set it apart from a general-purpose validator, and both are why it is hand-written:
//!
//! * **Error strings.** Messages are api7's, byte for byte where known (`property "x" is required`,
//!   `property "a" validation failed: wrong type: expected string, got number`, ...). The first failure wins,
//!   exactly like the generated Lua code, which returns on the first failed check.
//! * **Default filling.** Validation mutates the value: a missing property whose sub-schema has a `default`
//!   (number, string, boolean including `false`, object or array) gets a copy of that default. This only
//!   happens inside objects that are present, and the default itself is not validated.
//!
//! Values are seen the way Lua sees them after cjson: every number is a double (`1.0` is an integer, since
//! api7 tests `math.fmod(v, 1) == 0`), objects and arrays are both `table` in error messages, and an empty
//! object `{}` also passes as an empty array (a Lua table built by plugin code has no array/object mark).
//!
//! Order of checks inside one schema, as in api7's generated code: `$ref` (which replaces its siblings, as
//! draft 4 says), `type`, object keywords (`minProperties`, `maxProperties`, `required`, `properties` in
//! schema order with default filling, `patternProperties`/`additionalProperties` in document order,
//! `dependencies`, `propertyNames`), array keywords (`minItems`, `maxItems`, `items`, `additionalItems`,
//! `contains`, `uniqueItems`), string keywords (`minLength`, `maxLength`, `pattern`, `format`), number
//! keywords (`minimum`, `maximum`, numeric `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`), `enum`,
//! `const`, `allOf`, `anyOf`, `oneOf`, `not`, then `if`/`then`/`else`. `required` runs before `properties`
//! (api7 "switches the required keyword around to check for missing keys first"), so a missing key is
//! reported before a sibling's type error.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;
use serde_json::{Map, Value};

/// Recursion limit while validating. Values parsed by `serde_json` nest at most 128 deep, so this only
/// stops schemas that recurse without consuming the value (`{"allOf": [{"$ref": "#"}]}`).
const MAX_DEPTH: usize = 512;

/// A schema that cannot be compiled. `path` is the JSON pointer of the offending schema location.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    /// A `pattern` or `patternProperties` key is not a valid regular expression.
    #[error("invalid regex {pattern:?} at {path}: {reason}")]
    Pattern {
        /// Schema location.
        path: String,
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// A `$ref` that is not a local JSON pointer, or points nowhere, or only points at itself.
    #[error("unresolvable $ref {reference:?} at {path}")]
    Ref {
        /// Schema location.
        path: String,
        /// The reference as written.
        reference: String,
    },
    /// A keyword whose value has the wrong shape (`minLength: "3"`, an unknown `type` name, ...).
    #[error("invalid schema at {path}: {reason}")]
    Keyword {
        /// Schema location.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A compiled schema. Compile once (regexes and `$ref`s are resolved here), validate many times.
#[derive(Debug)]
pub(crate) struct Schema {
    nodes: Vec<Node>,
    root: usize,
}

#[derive(Debug)]
enum Node {
    /// `true`, `{}`, or a schema with no keyword we check.
    Any,
    /// `false`.
    Never,
    /// A resolved `$ref`.
    Alias(usize),
    Keywords(Box<Keywords>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Object,
    Array,
    String,
    Number,
    Integer,
    Boolean,
    Null,
    /// api7 extension: any Lua table.
    Table,
    /// api7 extension: a Lua function, which JSON never holds.
    Function,
}

#[derive(Debug)]
struct Types {
    list: Vec<JsonType>,
    /// `expected string` or `expected one of string, number`.
    expected: String,
}

#[derive(Debug)]
struct Property {
    name: String,
    node: usize,
    default: Option<Value>,
}

#[derive(Debug)]
enum Additional {
    Allowed,
    Forbidden,
    Schema(usize),
}

#[derive(Debug)]
enum Dependency {
    Properties(Vec<String>),
    Schema(usize),
}

#[derive(Debug)]
enum Items {
    None,
    All(usize),
    Tuple(Vec<usize>),
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Ipv4,
    Ipv6,
}

#[derive(Debug)]
struct Keywords {
    types: Option<Types>,

    object_checks: bool,
    min_properties: Option<usize>,
    max_properties: Option<usize>,
    required: Vec<String>,
    properties: Vec<Property>,
    pattern_properties: Vec<(Regex, usize)>,
    additional: Additional,
    walk_keys: bool,
    dependencies: Vec<(String, Dependency)>,
    property_names: Option<usize>,

    array_checks: bool,
    min_items: Option<usize>,
    max_items: Option<usize>,
    items: Items,
    additional_items: Additional,
    contains: Option<usize>,
    unique_items: bool,

    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<(String, Regex)>,
    format: Option<Format>,

    minimum: Option<f64>,
    exclusive_minimum_flag: bool,
    maximum: Option<f64>,
    exclusive_maximum_flag: bool,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    multiple_of: Option<f64>,

    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,

    all_of: Vec<usize>,
    any_of: Vec<usize>,
    one_of: Vec<usize>,
    not: Option<usize>,
    condition: Option<(usize, Option<usize>, Option<usize>)>,
}

impl Schema {
    /// Compiles a schema document. `$ref`s are local JSON pointers into `schema` (`#/definitions/x`).
    pub(crate) fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let mut compiler = Compiler {
            root: schema,
            nodes: Vec::new(),
            refs: HashMap::new(),
        };
        let root = compiler.compile(schema, "#")?;
        compiler.check_alias_cycles()?;
        Ok(Schema {
            nodes: compiler.nodes,
            root,
        })
    }

    /// Validates `value` and fills defaults into it, returning api7's message for the first failure.
    /// On failure the value may already hold some defaults (as with api7, which mutates in place).
    pub(crate) fn validate(&self, value: &mut Value) -> Result<(), String> {
        self.check(self.root, value, 0)
    }

    /// Validates without touching `value` (defaults are filled into a scratch copy).
    pub(crate) fn validate_ref(&self, value: &Value) -> Result<(), String> {
        let mut copy = value.clone();
        self.validate(&mut copy)
    }

    fn check(&self, node: usize, value: &mut Value, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("schema nests too deeply".to_owned());
        }
        match self.nodes.get(node) {
            None | Some(Node::Any) => Ok(()),
            Some(Node::Never) => Err("expect false always".to_owned()),
            Some(Node::Alias(target)) => self.check(*target, value, depth + 1),
            Some(Node::Keywords(k)) => self.check_keywords(k, value, depth + 1),
        }
    }

    fn matches(&self, node: usize, value: &mut Value, depth: usize) -> bool {
        self.check(node, value, depth).is_ok()
    }

    fn check_keywords(&self, k: &Keywords, value: &mut Value, depth: usize) -> Result<(), String> {
        if let Some(types) = &k.types
            && !types.list.iter().any(|t| type_matches(*t, value))
        {
            return Err(format!(
                "wrong type: {}, got {}",
                types.expected,
                lua_type(value)
            ));
        }
        if k.object_checks {
            self.check_object(k, value, depth)?;
        }
        if k.array_checks {
            self.check_array(k, value, depth)?;
        }
        if let Value::String(s) = value {
            check_string(k, s)?;
        }
        if let Value::Number(n) = value {
            check_number(k, n.as_f64().unwrap_or(f64::NAN))?;
        }
        if let Some(values) = &k.enumeration
            && !values.iter().any(|e| lua_eq(e, value))
        {
            return Err("matches none of the enum values".to_owned());
        }
        if let Some(c) = &k.constant
            && !lua_eq(c, value)
        {
            return Err("failed to check const value".to_owned());
        }
        for (i, sub) in k.all_of.iter().enumerate() {
            self.check(*sub, value, depth)
                .map_err(|e| format!("allOf {} failed: {e}", i + 1))?;
        }
        if !k.any_of.is_empty() && !k.any_of.iter().any(|sub| self.matches(*sub, value, depth)) {
            return Err("object matches none of the alternatives".to_owned());
        }
        if !k.one_of.is_empty() {
            let mut matched: Option<usize> = None;
            for (i, sub) in k.one_of.iter().enumerate() {
                if self.matches(*sub, value, depth) {
                    if let Some(first) = matched {
                        return Err(format!(
                            "value should match only one schema, but matches both schemas {} and {}",
                            first + 1,
                            i + 1
                        ));
                    }
                    matched = Some(i);
                }
            }
            if matched.is_none() {
                return Err("value should match only one schema, but matches none".to_owned());
            }
        }
        if let Some(sub) = k.not
            && self.matches(sub, value, depth)
        {
            return Err("value wasn't supposed to match schema".to_owned());
        }
        if let Some((cond, then, otherwise)) = k.condition {
            if self.matches(cond, value, depth) {
                if let Some(then) = then
                    && !self.matches(then, value, depth)
                {
                    return Err("then clause did not match".to_owned());
                }
            } else if let Some(otherwise) = otherwise
                && !self.matches(otherwise, value, depth)
            {
                return Err("else clause did not match".to_owned());
            }
        }
        Ok(())
    }

    fn check_object(&self, k: &Keywords, value: &mut Value, depth: usize) -> Result<(), String> {
        let Value::Object(map) = value else {
            return Ok(());
        };
        if let Some(min) = k.min_properties
            && map.len() < min
        {
            return Err(format!("expect object to have at least {min} properties"));
        }
        if let Some(max) = k.max_properties
            && map.len() > max
        {
            return Err(format!("expect object to have at most {max} properties"));
        }
        for name in &k.required {
            if !map.contains_key(name) {
                return Err(format!("property {} is required", lua_quote(name)));
            }
        }
        for prop in &k.properties {
            match map.get_mut(&prop.name) {
                Some(v) => self.check(prop.node, v, depth).map_err(|e| {
                    format!("property {} validation failed: {e}", lua_quote(&prop.name))
                })?,
                None => {
                    if let Some(default) = &prop.default {
                        map.insert(prop.name.clone(), default.clone());
                    }
                }
            }
        }
        if k.walk_keys {
            for (key, v) in map.iter_mut() {
                let mut matched = false;
                for (re, node) in &k.pattern_properties {
                    if re.is_match(key) {
                        matched = true;
                        self.check(*node, v, depth).map_err(|e| {
                            format!("property {} validation failed: {e}", lua_quote(key))
                        })?;
                    }
                }
                if matched || k.properties.iter().any(|p| &p.name == key) {
                    continue;
                }
                match k.additional {
                    Additional::Allowed => {}
                    Additional::Forbidden => {
                        return Err(format!("additional properties forbidden, found {key}"));
                    }
                    Additional::Schema(node) => {
                        self.check(node, v, depth).map_err(|e| {
                            format!("property {} validation failed: {e}", lua_quote(key))
                        })?;
                    }
                }
            }
        }
        for (name, dependency) in &k.dependencies {
            if !has_key(value, name) {
                continue;
            }
            match dependency {
                Dependency::Properties(needed) => {
                    for dep in needed {
                        if !has_key(value, dep) {
                            return Err(format!(
                                "property {} is required when {} is set",
                                lua_quote(dep),
                                lua_quote(name)
                            ));
                        }
                    }
                }
                Dependency::Schema(node) => {
                    self.check(*node, value, depth).map_err(|e| {
                        format!(
                            "failed to validate dependent schema for {}: {e}",
                            lua_quote(name)
                        )
                    })?;
                }
            }
        }
        if let Some(node) = k.property_names
            && let Value::Object(map) = value
        {
            for key in map.keys() {
                let mut name = Value::String(key.clone());
                self.check(node, &mut name, depth).map_err(|e| {
                    format!("property name {} validation failed: {e}", lua_quote(key))
                })?;
            }
        }
        Ok(())
    }

    fn check_array(&self, k: &Keywords, value: &mut Value, depth: usize) -> Result<(), String> {
        let items: &mut [Value] = match value {
            Value::Array(items) => items,
            // An empty Lua table is both an empty object and an empty array.
            Value::Object(map) if map.is_empty() => &mut [],
            _ => return Ok(()),
        };
        if let Some(min) = k.min_items
            && items.len() < min
        {
            return Err(format!("expect array to have at least {min} items"));
        }
        if let Some(max) = k.max_items
            && items.len() > max
        {
            return Err(format!("expect array to have at most {max} items"));
        }
        match &k.items {
            Items::None => {}
            Items::All(node) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.check(*node, item, depth)
                        .map_err(|e| format!("failed to validate item {}: {e}", i + 1))?;
                }
            }
            Items::Tuple(nodes) => {
                for (i, (node, item)) in nodes.iter().zip(items.iter_mut()).enumerate() {
                    self.check(*node, item, depth)
                        .map_err(|e| format!("failed to validate item {}: {e}", i + 1))?;
                }
                match k.additional_items {
                    Additional::Allowed => {}
                    Additional::Forbidden => {
                        if items.len() > nodes.len() {
                            return Err("found extra item".to_owned());
                        }
                    }
                    Additional::Schema(node) => {
                        for (i, item) in items.iter_mut().enumerate().skip(nodes.len()) {
                            self.check(node, item, depth).map_err(|e| {
                                format!("failed to validate additional item {}: {e}", i + 1)
                            })?;
                        }
                    }
                }
            }
        }
        if let Some(node) = k.contains
            && !items.iter_mut().any(|item| self.matches(node, item, depth))
        {
            return Err("failed to validate contains: no item matches the schema".to_owned());
        }
        if k.unique_items
            && let Some((a, b)) = first_duplicate(items)
        {
            return Err(format!(
                "expected unique items but items {a} and {b} are equal"
            ));
        }
        Ok(())
    }
}

fn has_key(value: &Value, key: &str) -> bool {
    value.as_object().is_some_and(|m| m.contains_key(key))
}

fn check_string(k: &Keywords, s: &str) -> Result<(), String> {
    if k.min_length.is_some() || k.max_length.is_some() {
        let len = s.chars().count();
        if let Some(min) = k.min_length
            && len < min
        {
            return Err(format!(
                "string too short, expected at least {min}, got {len}"
            ));
        }
        if let Some(max) = k.max_length
            && len > max
        {
            return Err(format!(
                "string too long, expected at most {max}, got {len}"
            ));
        }
    }
    if let Some((source, re)) = &k.pattern
        && !re.is_match(s)
    {
        return Err(format!(
            "failed to match pattern {} with {}",
            lua_quote(source),
            lua_quote(s)
        ));
    }
    match k.format {
        Some(Format::Ipv4) if s.parse::<Ipv4Addr>().is_err() => {
            Err("expect valid ipv4 address".to_owned())
        }
        Some(Format::Ipv6) if s.parse::<Ipv6Addr>().is_err() => {
            Err("expect valid ipv6 address".to_owned())
        }
        _ => Ok(()),
    }
}

fn check_number(k: &Keywords, n: f64) -> Result<(), String> {
    if let Some(min) = k.minimum {
        if k.exclusive_minimum_flag {
            if n <= min {
                return Err(format!(
                    "expected {} to be strictly greater than {}",
                    lua_number(n),
                    lua_number(min)
                ));
            }
        } else if n < min {
            return Err(format!(
                "expected {} to be greater than {}",
                lua_number(n),
                lua_number(min)
            ));
        }
    }
    if let Some(max) = k.maximum {
        if k.exclusive_maximum_flag {
            if n >= max {
                return Err(format!(
                    "expected {} to be strictly smaller than {}",
                    lua_number(n),
                    lua_number(max)
                ));
            }
        } else if n > max {
            return Err(format!(
                "expected {} to be smaller than {}",
                lua_number(n),
                lua_number(max)
            ));
        }
    }
    if let Some(min) = k.exclusive_minimum
        && n <= min
    {
        return Err(format!(
            "expected {} to be strictly greater than {}",
            lua_number(n),
            lua_number(min)
        ));
    }
    if let Some(max) = k.exclusive_maximum
        && n >= max
    {
        return Err(format!(
            "expected {} to be strictly smaller than {}",
            lua_number(n),
            lua_number(max)
        ));
    }
    if let Some(m) = k.multiple_of
        && (n / m).fract() != 0.0
    {
        return Err(format!(
            "expected {} to be a multiple of {}",
            lua_number(n),
            lua_number(m)
        ));
    }
    Ok(())
}

fn type_matches(t: JsonType, value: &Value) -> bool {
    match (t, value) {
        (JsonType::Object, Value::Object(_)) => true,
        (JsonType::Array, Value::Array(_)) => true,
        (JsonType::Array, Value::Object(map)) => map.is_empty(),
        (JsonType::String, Value::String(_)) => true,
        (JsonType::Number, Value::Number(_)) => true,
        (JsonType::Integer, Value::Number(n)) => {
            n.is_i64()
                || n.is_u64()
                || n.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        (JsonType::Boolean, Value::Bool(_)) => true,
        (JsonType::Null, Value::Null) => true,
        (JsonType::Table, Value::Object(_) | Value::Array(_)) => true,
        _ => false,
    }
}

/// Lua's `type()` of the value after cjson decoding; `null` is `cjson.null`, a lightuserdata.
fn lua_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "userdata",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) | Value::Object(_) => "table",
    }
}

/// Equality as api7's `deepeq`: numbers compare as doubles, and an empty object equals an empty array
/// (both are an empty Lua table).
fn lua_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| lua_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| lua_eq(v, w)))
        }
        (Value::Array(x), Value::Object(y)) | (Value::Object(y), Value::Array(x)) => {
            x.is_empty() && y.is_empty()
        }
        _ => a == b,
    }
}

/// The pair reported by api7's `uniqueItems`: scalars are checked first (the second occurrence paired with
/// the first), then tables pairwise. Indices are 1-based array positions.
fn first_duplicate(items: &[Value]) -> Option<(usize, usize)> {
    let is_table = |v: &Value| matches!(v, Value::Array(_) | Value::Object(_));
    for (j, b) in items.iter().enumerate() {
        if is_table(b) {
            continue;
        }
        if let Some(i) = items[..j].iter().position(|a| !is_table(a) && lua_eq(a, b)) {
            return Some((i + 1, j + 1));
        }
    }
    let tables: Vec<usize> = (0..items.len()).filter(|&i| is_table(&items[i])).collect();
    for (n, &i) in tables.iter().enumerate() {
        for &j in &tables[n + 1..] {
            if lua_eq(&items[i], &items[j]) {
                return Some((i + 1, j + 1));
            }
        }
    }
    None
}

/// Lua's `string.format("%q", s)` as LuaJIT writes it.
pub(crate) fn lua_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => {
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    out.push_str("\\000");
                } else {
                    out.push_str("\\0");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lua's `tostring(n)` for a number: C's `%.14g`.
pub(crate) fn lua_number(n: f64) -> String {
    if n.is_nan() {
        return "nan".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let sci = format!("{n:.13e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..14).contains(&exponent) {
        let decimals = usize::try_from(13 - exponent).unwrap_or(0);
        trim_fraction(&format!("{n:.decimals$}")).to_owned()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{}e{sign}{:02}",
            trim_fraction(mantissa),
            exponent.unsigned_abs()
        )
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    refs: HashMap<String, usize>,
}

fn keyword_error(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Keyword {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A JSON array, or an empty object (an empty Lua table converted to JSON).
fn as_list(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) => Some(items),
        Value::Object(map) if map.is_empty() => Some(&[]),
        _ => None,
    }
}

fn as_count(value: &Value, path: &str, keyword: &str) -> Result<usize, SchemaError> {
    let n = value.as_f64().filter(|n| *n >= 0.0 && n.fract() == 0.0);
    match n {
        // `as` saturates: a count beyond usize is an unreachable limit anyway.
        Some(n) => Ok(n as usize),
        None => Err(keyword_error(
            path,
            format!("{keyword} must be a non-negative integer"),
        )),
    }
}

fn as_number(value: &Value, path: &str, keyword: &str) -> Result<f64, SchemaError> {
    value
        .as_f64()
        .ok_or_else(|| keyword_error(path, format!("{keyword} must be a number")))
}

fn as_strings(value: &Value, path: &str, keyword: &str) -> Result<Vec<String>, SchemaError> {
    let list = as_list(value)
        .ok_or_else(|| keyword_error(path, format!("{keyword} must be an array of strings")))?;
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                keyword_error(path, format!("{keyword} must be an array of strings"))
            })
        })
        .collect()
}

fn compile_regex(pattern: &str, path: &str) -> Result<Regex, SchemaError> {
    Regex::new(pattern).map_err(|e| SchemaError::Pattern {
        path: path.to_owned(),
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_type(name: &str, path: &str) -> Result<JsonType, SchemaError> {
    Ok(match name {
        "object" => JsonType::Object,
        "array" => JsonType::Array,
        "string" => JsonType::String,
        "number" => JsonType::Number,
        "integer" => JsonType::Integer,
        "boolean" => JsonType::Boolean,
        "null" => JsonType::Null,
        "table" => JsonType::Table,
        "function" => JsonType::Function,
        other => return Err(keyword_error(path, format!("invalid JSON type: {other}"))),
    })
}

/// A default api7 fills: number, string, boolean or table (not `null`, which is `cjson.null`).
fn fillable_default(schema: &Value) -> Option<Value> {
    match schema.get("default")? {
        Value::Null => None,
        v => Some(v.clone()),
    }
}

impl Compiler<'_> {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn compile(&mut self, schema: &Value, path: &str) -> Result<usize, SchemaError> {
        match schema {
            Value::Bool(true) => Ok(self.push(Node::Any)),
            Value::Bool(false) => Ok(self.push(Node::Never)),
            // An empty Lua table may arrive as `[]`.
            Value::Array(items) if items.is_empty() => Ok(self.push(Node::Any)),
            Value::Object(map) => match map.get("$ref") {
                Some(Value::String(reference)) => self.compile_ref(reference, path),
                Some(_) => Err(keyword_error(path, "$ref must be a string")),
                None => self.compile_keywords(map, path),
            },
            _ => Err(keyword_error(
                path,
                "a schema must be an object or a boolean",
            )),
        }
    }

    fn compile_ref(&mut self, reference: &str, path: &str) -> Result<usize, SchemaError> {
        if let Some(&id) = self.refs.get(reference) {
            return Ok(id);
        }
        let unresolved = || SchemaError::Ref {
            path: path.to_owned(),
            reference: reference.to_owned(),
        };
        let pointer = reference.strip_prefix('#').ok_or_else(unresolved)?;
        let root = self.root;
        let target = root.pointer(pointer).ok_or_else(unresolved)?;
        let id = self.push(Node::Any);
        self.refs.insert(reference.to_owned(), id);
        let compiled = self.compile(target, reference)?;
        self.nodes[id] = Node::Alias(compiled);
        Ok(id)
    }

    /// A `$ref` chain that only leads back to itself would recurse without consuming the value.
    fn check_alias_cycles(&self) -> Result<(), SchemaError> {
        for start in 0..self.nodes.len() {
            let mut current = start;
            let mut steps = 0;
            while let Some(Node::Alias(next)) = self.nodes.get(current) {
                current = *next;
                steps += 1;
                if steps > self.nodes.len() {
                    let reference = self
                        .refs
                        .iter()
                        .find(|(_, id)| **id == start)
                        .map(|(r, _)| r.clone())
                        .unwrap_or_default();
                    return Err(SchemaError::Ref {
                        path: reference.clone(),
                        reference,
                    });
                }
            }
        }
        Ok(())
    }

    fn sub(&mut self, schema: &Value, path: &str, key: &str) -> Result<usize, SchemaError> {
        self.compile(schema, &format!("{path}/{}", escape_pointer(key)))
    }

    fn sub_list(
        &mut self,
        value: &Value,
        path: &str,
        key: &str,
    ) -> Result<Vec<usize>, SchemaError> {
        let list = as_list(value)
            .ok_or_else(|| keyword_error(path, format!("{key} must be an array of schemas")))?;
        let mut out = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            out.push(self.compile(item, &format!("{path}/{key}/{i}"))?);
        }
        Ok(out)
    }

    fn compile_keywords(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
    ) -> Result<usize, SchemaError> {
        let mut k = Keywords {
            types: None,
            object_checks: false,
            min_properties: None,
            max_properties: None,
            required: Vec::new(),
            properties: Vec::new(),
            pattern_properties: Vec::new(),
            additional: Additional::Allowed,
            walk_keys: false,
            dependencies: Vec::new(),
            property_names: None,
            array_checks: false,
            min_items: None,
            max_items: None,
            items: Items::None,
            additional_items: Additional::Allowed,
            contains: None,
            unique_items: false,
            min_length: None,
            max_length: None,
            pattern: None,
            format: None,
            minimum: None,
            exclusive_minimum_flag: false,
            maximum: None,
            exclusive_maximum_flag: false,
            exclusive_minimum: None,
            exclusive_maximum: None,
            multiple_of: None,
            enumeration: None,
            constant: None,
            all_of: Vec::new(),
            any_of: Vec::new(),
            one_of: Vec::new(),
            not: None,
            condition: None,
        };
        let mut any_keyword = false;
        for (key, value) in map {
            let known = self.keyword(&mut k, key, value, path)?;
            any_keyword |= known;
        }
        if let (Some(_), Some(cond)) = (map.get("if"), k.condition.as_mut()) {
            if let Some(then) = map.get("then") {
                cond.1 = Some(self.sub(then, path, "then")?);
            }
            if let Some(otherwise) = map.get("else") {
                cond.2 = Some(self.sub(otherwise, path, "else")?);
            }
        }
        if !any_keyword {
            return Ok(self.push(Node::Any));
        }
        Ok(self.push(Node::Keywords(Box::new(k))))
    }

    /// Reads one keyword into `k`; returns whether it is one we check.
    fn keyword(
        &mut self,
        k: &mut Keywords,
        key: &str,
        value: &Value,
        path: &str,
    ) -> Result<bool, SchemaError> {
        let here = format!("{path}/{}", escape_pointer(key));
        match key {
            "type" => {
                let (list, expected) = match value {
                    Value::String(name) => {
                        (vec![parse_type(name, &here)?], format!("expected {name}"))
                    }
                    other => {
                        let names = as_strings(other, &here, "type")?;
                        let list = names
                            .iter()
                            .map(|n| parse_type(n, &here))
                            .collect::<Result<Vec<_>, _>>()?;
                        (list, format!("expected one of {}", names.join(", ")))
                    }
                };
                k.types = Some(Types { list, expected });
            }
            "properties" => {
                let Value::Object(props) = value else {
                    if as_list(value).is_some() {
                        k.object_checks = true;
                        return Ok(true);
                    }
                    return Err(keyword_error(&here, "properties must be an object"));
                };
                for (name, schema) in props {
                    let node = self.sub(schema, &here, name)?;
                    k.properties.push(Property {
                        name: name.clone(),
                        node,
                        default: fillable_default(schema),
                    });
                }
                k.object_checks = true;
            }
            "required" => {
                k.required = as_strings(value, &here, "required")?;
                k.object_checks = true;
            }
            "additionalProperties" => {
                k.additional = match value {
                    Value::Bool(true) => Additional::Allowed,
                    Value::Bool(false) => Additional::Forbidden,
                    schema => Additional::Schema(self.compile(schema, &here)?),
                };
                k.object_checks = true;
                k.walk_keys = true;
            }
            "patternProperties" => {
                let Some(patterns) = value.as_object() else {
                    return Err(keyword_error(&here, "patternProperties must be an object"));
                };
                for (pattern, schema) in patterns {
                    let re = compile_regex(pattern, &here)?;
                    let node = self.sub(schema, &here, pattern)?;
                    k.pattern_properties.push((re, node));
                }
                k.object_checks = true;
                k.walk_keys = true;
            }
            "minProperties" => {
                k.min_properties = Some(as_count(value, &here, key)?);
                k.object_checks = true;
            }
            "maxProperties" => {
                k.max_properties = Some(as_count(value, &here, key)?);
                k.object_checks = true;
            }
            "dependencies" => {
                let Some(deps) = value.as_object() else {
                    return Err(keyword_error(&here, "dependencies must be an object"));
                };
                for (name, dep) in deps {
                    let dependency = match dep {
                        Value::Array(_) => Dependency::Properties(as_strings(dep, &here, key)?),
                        Value::String(s) => Dependency::Properties(vec![s.clone()]),
                        schema => Dependency::Schema(self.sub(schema, &here, name)?),
                    };
                    k.dependencies.push((name.clone(), dependency));
                }
                k.object_checks = true;
            }
            "propertyNames" => {
                k.property_names = Some(self.compile(value, &here)?);
                k.object_checks = true;
            }
            "items" => {
                k.items = match value {
                    Value::Array(list) if !list.is_empty() => {
                        let mut nodes = Vec::with_capacity(list.len());
                        for (i, item) in list.iter().enumerate() {
                            nodes.push(self.compile(item, &format!("{here}/{i}"))?);
                        }
                        Items::Tuple(nodes)
                    }
                    schema => Items::All(self.compile(schema, &here)?),
                };
                k.array_checks = true;
            }
            "additionalItems" => {
                k.additional_items = match value {
                    Value::Bool(true) => Additional::Allowed,
                    Value::Bool(false) => Additional::Forbidden,
                    schema => Additional::Schema(self.compile(schema, &here)?),
                };
                k.array_checks = true;
            }
            "minItems" => {
                k.min_items = Some(as_count(value, &here, key)?);
                k.array_checks = true;
            }
            "maxItems" => {
                k.max_items = Some(as_count(value, &here, key)?);
                k.array_checks = true;
            }
            "uniqueItems" => {
                k.unique_items = value.as_bool().unwrap_or(false);
                k.array_checks = true;
            }
            "contains" => {
                k.contains = Some(self.compile(value, &here)?);
                k.array_checks = true;
            }
            "minLength" => k.min_length = Some(as_count(value, &here, key)?),
            "maxLength" => k.max_length = Some(as_count(value, &here, key)?),
            "pattern" => {
                let Some(pattern) = value.as_str() else {
                    return Err(keyword_error(&here, "pattern must be a string"));
                };
                k.pattern = Some((pattern.to_owned(), compile_regex(pattern, &here)?));
            }
            "format" => {
                // Formats other than these are accepted without checking, as api7 does.
                k.format = match value.as_str() {
                    Some("ipv4") => Some(Format::Ipv4),
                    Some("ipv6") => Some(Format::Ipv6),
                    _ => return Ok(false),
                };
            }
            "minimum" => k.minimum = Some(as_number(value, &here, key)?),
            "maximum" => k.maximum = Some(as_number(value, &here, key)?),
            "exclusiveMinimum" => match value {
                Value::Bool(flag) => k.exclusive_minimum_flag = *flag,
                n => k.exclusive_minimum = Some(as_number(n, &here, key)?),
            },
            "exclusiveMaximum" => match value {
                Value::Bool(flag) => k.exclusive_maximum_flag = *flag,
                n => k.exclusive_maximum = Some(as_number(n, &here, key)?),
            },
            "multipleOf" => {
                let m = as_number(value, &here, key)?;
                if m <= 0.0 {
                    return Err(keyword_error(&here, "multipleOf must be greater than 0"));
                }
                k.multiple_of = Some(m);
            }
            "enum" => {
                let list =
                    as_list(value).ok_or_else(|| keyword_error(&here, "enum must be an array"))?;
                k.enumeration = Some(list.to_vec());
            }
            "const" => k.constant = Some(value.clone()),
            "allOf" => k.all_of = self.sub_list(value, path, key)?,
            "anyOf" => k.any_of = self.sub_list(value, path, key)?,
            "oneOf" => k.one_of = self.sub_list(value, path, key)?,
            "not" => k.not = Some(self.compile(value, &here)?),
            "if" => k.condition = Some((self.compile(value, &here)?, None, None)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
