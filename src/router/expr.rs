//! The lua-resty-expr v1 language used by a route's `vars`.
//!
//! An expression is an array of rules, ANDed unless the array starts with `"AND"`, `"OR"`, `"!AND"` or
//! `"!OR"`. A rule is `[var, op, value]`, `[var, "!", op, value]`, or a nested expression. Everything that
//! depends only on the config (regexes, CIDRs, numbers) is parsed once in [`Expr::compile`], so evaluation
//! does no parsing beyond reading the request's variables.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::Vars;

/// Why a `vars` expression was rejected. The messages follow lua-resty-expr's so the Admin API can
/// report `failed to validate the 'vars' expression: <message>` as APISIX does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExprError {
    /// An empty expression, an empty logical group, or a rule with fewer than two elements.
    #[error("rule too short")]
    TooShort,
    /// A rule with more than four elements.
    #[error("rule too long")]
    TooLong,
    /// A bare rule where an array of rules was expected (`["arg_a", "==", "1"]` instead of
    /// `[["arg_a", "==", "1"]]`).
    #[error("rule should be wrapped inside brackets")]
    NotWrapped,
    /// An element of a rule list that is neither an array nor a leading logical operator.
    #[error("invalid rule: {rule}")]
    InvalidRule {
        /// The offending element, as JSON.
        rule: String,
    },
    /// The variable name is not a string.
    #[error("invalid variable name: {name}")]
    InvalidVariable {
        /// The offending element, as JSON.
        name: String,
    },
    /// A four-element rule whose second element is not `"!"`.
    #[error("bad 'not' expression")]
    BadNot,
    /// An operator lua-resty-expr does not know.
    #[error("invalid operator '{op}'")]
    InvalidOperator {
        /// The operator as written (JSON for non-strings).
        op: String,
    },
    /// A value whose type can never satisfy the operator (an array for `==`, a string for `in`, …).
    #[error("invalid value for operator '{op}': {value}")]
    InvalidValue {
        /// The operator.
        op: &'static str,
        /// The value, as JSON.
        value: String,
    },
    /// A `~~` or `~*` pattern that does not compile.
    #[error("failed to compile regex '{pattern}': {reason}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex engine's message.
        reason: String,
    },
    /// An `ipmatch` entry that is neither an IP address nor a CIDR.
    #[error("failed to create ip matcher: invalid ip address: {addr}")]
    InvalidIp {
        /// The entry.
        addr: String,
    },
}

/// A compiled `vars` expression.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    root: Group,
}

impl Expr {
    /// Compiles a lua-resty-expr v1 expression (the JSON array of a route's `vars`).
    pub(crate) fn compile(value: &Value) -> Result<Self, ExprError> {
        let rules = value.as_array().ok_or(ExprError::NotWrapped)?;
        Ok(Self {
            root: Group::compile(rules, true)?,
        })
    }

    /// Evaluates the expression against the request's variables.
    pub(crate) fn eval(&self, vars: &dyn Vars) -> bool {
        self.root.eval(vars)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logic {
    And,
    Or,
}

#[derive(Debug, Clone)]
struct Group {
    logic: Logic,
    negate: bool,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Group(Group),
    Test(Test),
}

#[derive(Debug, Clone)]
struct Test {
    var: Box<str>,
    negate: bool,
    op: Op,
}

/// A scalar right-hand side. Variables are strings, so a number compares numerically against the
/// variable read as a Lua number, and `Nil` (JSON `null` or an omitted value) equals a missing variable.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Nil,
    Str(Box<str>),
    Num(f64),
}

#[derive(Debug, Clone, Copy)]
enum Ordering {
    Gt,
    Lt,
    Ge,
    Le,
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Scalar),
    Ne(Scalar),
    Cmp(Ordering, f64),
    Regex(Regex),
    In(Vec<Scalar>),
    Has(Scalar),
    IpMatch(IpMatcher),
}

fn logic_of(value: &Value) -> Option<(Logic, bool)> {
    match value.as_str()? {
        "AND" => Some((Logic::And, false)),
        "OR" => Some((Logic::Or, false)),
        "!AND" => Some((Logic::And, true)),
        "!OR" => Some((Logic::Or, true)),
        _ => None,
    }
}

impl Group {
    fn compile(items: &[Value], top: bool) -> Result<Self, ExprError> {
        let first = items.first().ok_or(ExprError::TooShort)?;
        let (logic, negate, rest) = match logic_of(first) {
            Some((logic, negate)) => (logic, negate, &items[1..]),
            None if first.is_array() => (Logic::And, false, items),
            None if top => return Err(ExprError::NotWrapped),
            None => return Err(invalid_rule(first)),
        };
        if rest.is_empty() {
            return Err(ExprError::TooShort);
        }
        let rules = rest.iter().map(Rule::compile).collect::<Result<_, _>>()?;
        Ok(Self {
            logic,
            negate,
            rules,
        })
    }

    fn eval(&self, vars: &dyn Vars) -> bool {
        let hit = match self.logic {
            Logic::And => self.rules.iter().all(|rule| rule.eval(vars)),
            Logic::Or => self.rules.iter().any(|rule| rule.eval(vars)),
        };
        hit != self.negate
    }
}

fn invalid_rule(value: &Value) -> ExprError {
    ExprError::InvalidRule {
        rule: value.to_string(),
    }
}

impl Rule {
    fn compile(value: &Value) -> Result<Self, ExprError> {
        let items = value.as_array().ok_or_else(|| invalid_rule(value))?;
        // Same test as lua-resty-expr: a rule whose head is an array or a logical operator is a group.
        match items.first() {
            Some(head) if head.is_array() || logic_of(head).is_some() => {
                Ok(Self::Group(Group::compile(items, false)?))
            }
            _ => Ok(Self::Test(Test::compile(items)?)),
        }
    }

    fn eval(&self, vars: &dyn Vars) -> bool {
        match self {
            Self::Group(group) => group.eval(vars),
            Self::Test(test) => test.eval(vars),
        }
    }
}

impl Test {
    fn compile(items: &[Value]) -> Result<Self, ExprError> {
        let (negate, op, value) = match items {
            [] | [_] => return Err(ExprError::TooShort),
            [_, op] => (false, op, &Value::Null),
            [_, op, value] => (false, op, value),
            [_, not, op, value] => {
                if not.as_str() != Some("!") {
                    return Err(ExprError::BadNot);
                }
                (true, op, value)
            }
            _ => return Err(ExprError::TooLong),
        };
        let var = match &items[0] {
            Value::String(name) => name.as_str().into(),
            other => {
                return Err(ExprError::InvalidVariable {
                    name: other.to_string(),
                });
            }
        };
        let op_name = op
            .as_str()
            .ok_or_else(|| ExprError::InvalidOperator { op: op.to_string() })?;
        Ok(Self {
            var,
            negate,
            op: Op::compile(op_name, value)?,
        })
    }

    fn eval(&self, vars: &dyn Vars) -> bool {
        let value = vars.var(&self.var);
        self.op.eval(value.as_deref()) != self.negate
    }
}

fn invalid_value(op: &'static str, value: &Value) -> ExprError {
    ExprError::InvalidValue {
        op,
        value: value.to_string(),
    }
}

/// `==`, `~=`, `in` and `has` accept strings and numbers (and `null` for the equality operators).
/// Booleans, arrays and objects never equal a request variable, so they are rejected instead of
/// silently never matching.
fn scalar(op: &'static str, value: &Value, allow_nil: bool) -> Result<Scalar, ExprError> {
    match value {
        Value::Null if allow_nil => Ok(Scalar::Nil),
        Value::String(s) => Ok(Scalar::Str(s.as_str().into())),
        Value::Number(n) => n
            .as_f64()
            .map(Scalar::Num)
            .ok_or_else(|| invalid_value(op, value)),
        _ => Err(invalid_value(op, value)),
    }
}

fn regex(pattern: &Value, case_insensitive: bool) -> Result<Regex, ExprError> {
    let op = if case_insensitive { "~*" } else { "~~" };
    let pattern = pattern.as_str().ok_or_else(|| invalid_value(op, pattern))?;
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|err| ExprError::InvalidRegex {
            pattern: pattern.to_owned(),
            reason: err.to_string(),
        })
}

impl Op {
    fn compile(op: &str, value: &Value) -> Result<Self, ExprError> {
        let ordering = |ordering, name| {
            let number = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => lua_tonumber(s),
                _ => None,
            };
            number
                .map(|n| Self::Cmp(ordering, n))
                .ok_or_else(|| invalid_value(name, value))
        };
        match op {
            "==" => Ok(Self::Eq(scalar("==", value, true)?)),
            "~=" => Ok(Self::Ne(scalar("~=", value, true)?)),
            ">" => ordering(Ordering::Gt, ">"),
            "<" => ordering(Ordering::Lt, "<"),
            ">=" => ordering(Ordering::Ge, ">="),
            "<=" => ordering(Ordering::Le, "<="),
            "~~" => Ok(Self::Regex(regex(value, false)?)),
            "~*" => Ok(Self::Regex(regex(value, true)?)),
            "in" => {
                let items = value.as_array().ok_or_else(|| invalid_value("in", value))?;
                let items = items
                    .iter()
                    .map(|item| scalar("in", item, false))
                    .collect::<Result<_, _>>()?;
                Ok(Self::In(items))
            }
            "has" => Ok(Self::Has(scalar("has", value, false)?)),
            "ipmatch" => {
                let addrs: Vec<&str> = match value {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(items) => items
                        .iter()
                        .map(|item| item.as_str().ok_or_else(|| invalid_value("ipmatch", item)))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(invalid_value("ipmatch", value)),
                };
                IpMatcher::new(addrs)
                    .map(Self::IpMatch)
                    .map_err(|addr| ExprError::InvalidIp { addr })
            }
            _ => Err(ExprError::InvalidOperator { op: op.to_owned() }),
        }
    }

    fn eval(&self, var: Option<&str>) -> bool {
        match self {
            Self::Eq(want) => scalar_eq(var, want),
            Self::Ne(want) => !scalar_eq(var, want),
            Self::Cmp(ordering, right) => {
                let Some(left) = var.and_then(lua_tonumber) else {
                    return false;
                };
                match ordering {
                    Ordering::Gt => left > *right,
                    Ordering::Lt => left < *right,
                    Ordering::Ge => left >= *right,
                    Ordering::Le => left <= *right,
                }
            }
            Self::Regex(re) => var.is_some_and(|v| re.is_match(v)),
            Self::In(items) => items.iter().any(|item| scalar_eq(var, item)),
            // Request variables are strings here, so a multi-valued variable (repeated header or
            // argument) arrives as a comma-separated list.
            Self::Has(want) => {
                var.is_some_and(|v| v.split(',').any(|part| scalar_eq(Some(part.trim()), want)))
            }
            Self::IpMatch(matcher) => var
                .and_then(|v| IpAddr::from_str(v).ok())
                .is_some_and(|ip| matcher.contains(ip)),
        }
    }
}

fn scalar_eq(var: Option<&str>, want: &Scalar) -> bool {
    match (var, want) {
        (None, Scalar::Nil) => true,
        (Some(v), Scalar::Str(s)) => v == &**s,
        (Some(v), Scalar::Num(n)) => lua_tonumber(v) == Some(*n),
        _ => false,
    }
}

/// Lua's `tonumber` on a string: surrounding whitespace allowed, decimal or `0x` hexadecimal, and no
/// `inf`/`nan` words (Rust's float parser accepts those, Lua's does not).
pub(crate) fn lua_tonumber(s: &str) -> Option<f64> {
    let s = s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if let Some(hex) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let magnitude = hex
            .bytes()
            .fold(0f64, |acc, b| acc * 16.0 + f64::from(hex_digit(b)));
        return Some(if negative { -magnitude } else { magnitude });
    }
    let decimal = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !decimal || !s.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<f64>().ok()
}

fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// A set of IP networks, as ipmatcher builds for `remote_addrs` and `ipmatch`.
#[derive(Debug, Clone, Default)]
pub(crate) struct IpMatcher {
    nets: Vec<IpNet>,
}

impl IpMatcher {
    /// Parses addresses (`10.0.0.1`, `::1`) and CIDRs (`10.0.0.0/8`). On failure returns the entry
    /// that did not parse.
    pub(crate) fn new<'a>(addrs: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let nets = addrs
            .into_iter()
            .map(|addr| {
                IpNet::from_str(addr)
                    .or_else(|_| IpAddr::from_str(addr).map(IpNet::from))
                    .map_err(|_| addr.to_owned())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    /// Whether `ip` is in one of the networks. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack listener reports for IPv4 clients) also matches as its IPv4 form.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)))
    }
}
