//! Clocks and HTTP dates for `ngx.now`, `ngx.time`, `ngx.today`, `ngx.http_time`, ...
//!
//! Natives: `now()` (float seconds, millisecond precision, read from the clock on every call: Moongate
//! has no per-event-loop time cache, so `ngx.update_time` is a no-op), `time()` (integer seconds),
//! `today()` (`yyyy-mm-dd`), `localtime()`/`utctime()` (`yyyy-mm-dd hh:mm:ss`), `http_time(t)`
//! (`Thu, 18 Nov 2010 11:27:35 GMT`), `cookie_time(t)` (`Thu, 18-Nov-10 11:27:35 GMT`) and
//! `parse_http_time(s)` (RFC 1123, RFC 850 and asctime formats) -> seconds | nil.
//!
//! "Local" time is UTC: the `time` crate cannot read the local offset safely once threads exist, and
//! gateways normally run in UTC anyway.

use std::time::{SystemTime, UNIX_EPOCH};

use mlua::{Lua, LuaString, Table, Value};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, Weekday};

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the epoch with millisecond precision.
pub(crate) fn now() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// Whole seconds since the epoch.
pub(crate) fn unix_time() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn at(t: f64) -> OffsetDateTime {
    let secs = if t.is_finite() { t.floor() as i64 } else { 0 };
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn weekday_name(w: Weekday) -> &'static str {
    DAYS[usize::from(w.number_days_from_monday())]
}

fn month_name(m: Month) -> &'static str {
    MONTHS[usize::from(u8::from(m) - 1)]
}

/// `Thu, 18 Nov 2010 11:27:35 GMT`.
pub(crate) fn http_time(t: f64) -> String {
    let d = at(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        weekday_name(d.weekday()),
        d.day(),
        month_name(d.month()),
        d.year(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// `Thu, 18-Nov-10 11:27:35 GMT` (four-digit years after 2037, as nginx does).
pub(crate) fn cookie_time(t: f64) -> String {
    let d = at(t);
    let year = if d.year() > 2037 {
        format!("{}", d.year())
    } else {
        format!("{:02}", d.year().rem_euclid(100))
    };
    format!(
        "{}, {:02}-{}-{} {:02}:{:02}:{:02} GMT",
        weekday_name(d.weekday()),
        d.day(),
        month_name(d.month()),
        year,
        d.hour(),
        d.minute(),
        d.second()
    )
}

fn datetime(d: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

fn month_from(name: &str) -> Option<Month> {
    let i = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))?;
    Month::try_from(u8::try_from(i + 1).ok()?).ok()
}

fn hms(s: &str) -> Option<Time> {
    let mut it = s.split(':');
    let h = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    let sec = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Time::from_hms(h, m, sec).ok()
}

/// Parses the three HTTP date formats nginx accepts; `None` when the text is not one of them.
pub(crate) fn parse_http_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (_, rest) = s.split_once([',', ' '])?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let (day, month, year, clock) = match parts.as_slice() {
        // RFC 1123: "18 Nov 2010 11:27:35 GMT"
        [day, month, year, clock, "GMT"] => (*day, *month, (*year).to_owned(), *clock),
        // RFC 850: "18-Nov-10 11:27:35 GMT"
        [dmy, clock, "GMT"] => {
            let mut it = dmy.split('-');
            let (day, month, year) = (it.next()?, it.next()?, it.next()?);
            let year = match year.len() {
                2 => {
                    let y: i32 = year.parse().ok()?;
                    (if y < 70 { 2000 + y } else { 1900 + y }).to_string()
                }
                _ => year.to_owned(),
            };
            (day, month, year, *clock)
        }
        // asctime: "Nov 18 11:27:35 2010"
        [month, day, clock, year] => (*day, *month, (*year).to_owned(), *clock),
        _ => return None,
    };
    let date =
        Date::from_calendar_date(year.parse().ok()?, month_from(month)?, day.parse().ok()?).ok()?;
    let dt = PrimitiveDateTime::new(date, hms(clock)?).assume_utc();
    Some(dt.unix_timestamp())
}

/// Registers the time natives.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    native.set("now", lua.create_function(|_, ()| Ok(now()))?)?;
    native.set("time", lua.create_function(|_, ()| Ok(unix_time()))?)?;
    native.set(
        "today",
        lua.create_function(|_, ()| {
            let d = OffsetDateTime::now_utc();
            Ok(format!(
                "{:04}-{:02}-{:02}",
                d.year(),
                u8::from(d.month()),
                d.day()
            ))
        })?,
    )?;
    native.set(
        "localtime",
        lua.create_function(|_, ()| Ok(datetime(OffsetDateTime::now_utc())))?,
    )?;
    native.set(
        "utctime",
        lua.create_function(|_, ()| Ok(datetime(OffsetDateTime::now_utc())))?,
    )?;
    native.set(
        "http_time",
        lua.create_function(|_, t: f64| Ok(http_time(t)))?,
    )?;
    native.set(
        "cookie_time",
        lua.create_function(|_, t: f64| Ok(cookie_time(t)))?,
    )?;
    native.set(
        "parse_http_time",
        lua.create_function(|_, s: LuaString| {
            Ok(match parse_http_time(&s.to_string_lossy()) {
                Some(t) => Value::Integer(t as _),
                None => Value::Nil,
            })
        })?,
    )?;
    Ok(())
}
