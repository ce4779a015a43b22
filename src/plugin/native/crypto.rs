//! Digests, HMAC, base64, CRC-32 and randomness for `ngx.*`, `resty.string`, `resty.sha256`, `resty.md5`,
//! `resty.hmac`, `resty.random` and `ngx.base64`.
//!
//! Natives (all take and return Lua byte strings):
//! `md5(s)` (lower-case hex, as `ngx.md5`), `md5_bin`, `sha1_bin`, `sha256_bin`,
//! `hmac(alg, key, msg)` with alg `md5|sha1|sha224|sha256|sha384|sha512` (raw bytes),
//! `hasher(alg)` (userdata with `:update(s)`, `:final()` raw bytes and reset, `:reset()`),
//! `base64_encode(s [, no_padding])`, `base64_decode(s)`, `base64url_encode(s)` (no padding),
//! `base64url_decode(s)`, `random_bytes(n [, strong])`, `crc32(s)` and `to_hex(s)`.
//!
//! Decoding follows nginx's `ngx_decode_base64`: input is read up to the first `=`, any other byte
//! outside the alphabet makes the result `nil`, as does a length of `4k + 1`; padding is optional.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use mlua::{ExternalError as _, Lua, LuaString, Table, UserData, UserDataMethods, Value};
use sha2::Digest as _;

/// Largest `random_bytes` request, to keep a plugin from allocating without bound.
const MAX_RANDOM_BYTES: usize = 1 << 20;

/// Why a crypto native refused its arguments.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CryptoError {
    /// The algorithm name is not one we provide.
    #[error("unsupported digest algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// `random_bytes` was asked for a negative or huge count.
    #[error("bad random byte count {0}")]
    BadCount(i64),
    /// The OS random source failed.
    #[error("cannot read random bytes: {0}")]
    Random(String),
}

/// A digest algorithm by its lua-resty name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// MD5
    Md5,
    /// SHA-1
    Sha1,
    /// SHA-224
    Sha224,
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
}

impl Algorithm {
    /// Parses `md5`, `sha1`, `sha224`, `sha256`, `sha384` or `sha512` (case-insensitive).
    pub(crate) fn from_name(name: &str) -> Result<Self, CryptoError> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Ok(Self::Md5),
            "sha1" => Ok(Self::Sha1),
            "sha224" => Ok(Self::Sha224),
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            _ => Err(CryptoError::UnknownAlgorithm(name.to_owned())),
        }
    }
}

/// HMAC of `msg` under `key`, raw bytes.
pub(crate) fn hmac(alg: Algorithm, key: &[u8], msg: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail; fall back to an empty
        // output rather than panicking if a future version ever changes that.
        match <M as KeyInit>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(msg);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
    match alg {
        Algorithm::Md5 => run::<hmac::Hmac<md5::Md5>>(key, msg),
        Algorithm::Sha1 => run::<hmac::Hmac<sha1::Sha1>>(key, msg),
        Algorithm::Sha224 => run::<hmac::Hmac<sha2::Sha224>>(key, msg),
        Algorithm::Sha256 => run::<hmac::Hmac<sha2::Sha256>>(key, msg),
        Algorithm::Sha384 => run::<hmac::Hmac<sha2::Sha384>>(key, msg),
        Algorithm::Sha512 => run::<hmac::Hmac<sha2::Sha512>>(key, msg),
    }
}

/// An incremental digest, exposed to Lua as the `hasher(alg)` userdata.
#[derive(Clone)]
pub(crate) enum Hasher {
    /// MD5
    Md5(md5::Md5),
    /// SHA-1
    Sha1(sha1::Sha1),
    /// SHA-224
    Sha224(sha2::Sha224),
    /// SHA-256
    Sha256(sha2::Sha256),
    /// SHA-384
    Sha384(sha2::Sha384),
    /// SHA-512
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for `alg`.
    pub(crate) fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Md5 => Self::Md5(md5::Md5::new()),
            Algorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            Algorithm::Sha224 => Self::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Self::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha224(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// Returns the digest and resets the state.
    fn finalize_reset(&mut self) -> Vec<u8> {
        match self {
            Self::Md5(h) => h.finalize_reset().to_vec(),
            Self::Sha1(h) => h.finalize_reset().to_vec(),
            Self::Sha224(h) => h.finalize_reset().to_vec(),
            Self::Sha256(h) => h.finalize_reset().to_vec(),
            Self::Sha384(h) => h.finalize_reset().to_vec(),
            Self::Sha512(h) => h.finalize_reset().to_vec(),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Md5(h) => sha2::Digest::reset(h),
            Self::Sha1(h) => sha2::Digest::reset(h),
            Self::Sha224(h) => sha2::Digest::reset(h),
            Self::Sha256(h) => sha2::Digest::reset(h),
            Self::Sha384(h) => sha2::Digest::reset(h),
            Self::Sha512(h) => sha2::Digest::reset(h),
        }
    }
}

impl UserData for Hasher {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("update", |_, this, s: LuaString| {
            this.update(&s.as_bytes());
            Ok(true)
        });
        methods.add_method_mut("final", |lua, this, ()| {
            lua.create_string(this.finalize_reset())
        });
        methods.add_method_mut("reset", |_, this, ()| {
            this.reset();
            Ok(true)
        });
    }
}

const STD_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const fn decode_table(alphabet: &[u8; 64]) -> [u8; 256] {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
}

static STD_DECODE: [u8; 256] = decode_table(STD_ALPHABET);
static URL_DECODE: [u8; 256] = decode_table(URL_ALPHABET);

/// nginx's `ngx_decode_base64_internal`: `None` when the input is invalid.
fn decode_base64_ngx(input: &[u8], table: &[u8; 256]) -> Option<Vec<u8>> {
    let len = input.iter().position(|&b| b == b'=').unwrap_or(input.len());
    let data = &input[..len];
    if data.iter().any(|&b| table[usize::from(b)] == 0xff) || len % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(len / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = (acc << 6) | u32::from(table[usize::from(b)]);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// CRC-32 (IEEE), as `ngx.crc32_long`.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    static TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    crc ^ 0xffff_ffff
}

fn string_or_nil(lua: &Lua, bytes: Option<Vec<u8>>) -> mlua::Result<Value> {
    match bytes {
        Some(b) => lua.create_string(b).map(Value::String),
        None => Ok(Value::Nil),
    }
}

/// Registers the crypto natives.
pub(crate) fn register(lua: &Lua, native: &Table) -> mlua::Result<()> {
    native.set(
        "md5",
        lua.create_function(|_, s: LuaString| Ok(hex::encode(md5::Md5::digest(s.as_bytes()))))?,
    )?;
    native.set(
        "md5_bin",
        lua.create_function(|lua, s: LuaString| lua.create_string(md5::Md5::digest(s.as_bytes())))?,
    )?;
    native.set(
        "sha1_bin",
        lua.create_function(|lua, s: LuaString| {
            lua.create_string(sha1::Sha1::digest(s.as_bytes()))
        })?,
    )?;
    native.set(
        "sha256_bin",
        lua.create_function(|lua, s: LuaString| {
            lua.create_string(sha2::Sha256::digest(s.as_bytes()))
        })?,
    )?;
    native.set(
        "hmac",
        lua.create_function(|lua, (alg, key, msg): (LuaString, LuaString, LuaString)| {
            let alg = Algorithm::from_name(&alg.to_string_lossy()).map_err(|e| e.into_lua_err())?;
            lua.create_string(hmac(alg, &key.as_bytes(), &msg.as_bytes()))
        })?,
    )?;
    native.set(
        "hasher",
        lua.create_function(|_, alg: LuaString| {
            let alg = Algorithm::from_name(&alg.to_string_lossy()).map_err(|e| e.into_lua_err())?;
            Ok(Hasher::new(alg))
        })?,
    )?;
    native.set(
        "base64_encode",
        lua.create_function(|_, (s, no_padding): (LuaString, Option<bool>)| {
            let bytes = s.as_bytes();
            Ok(if no_padding.unwrap_or(false) {
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
            } else {
                base64::engine::general_purpose::STANDARD.encode(bytes)
            })
        })?,
    )?;
    native.set(
        "base64_decode",
        lua.create_function(|lua, s: LuaString| {
            string_or_nil(lua, decode_base64_ngx(&s.as_bytes(), &STD_DECODE))
        })?,
    )?;
    native.set(
        "base64url_encode",
        lua.create_function(|_, s: LuaString| {
            Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.as_bytes()))
        })?,
    )?;
    native.set(
        "base64url_decode",
        lua.create_function(|lua, s: LuaString| {
            string_or_nil(lua, decode_base64_ngx(&s.as_bytes(), &URL_DECODE))
        })?,
    )?;
    native.set(
        "random_bytes",
        lua.create_function(|lua, (n, _strong): (i64, Option<bool>)| {
            let len = usize::try_from(n)
                .ok()
                .filter(|&len| len <= MAX_RANDOM_BYTES)
                .ok_or_else(|| CryptoError::BadCount(n).into_lua_err())?;
            let mut buf = vec![0u8; len];
            getrandom::fill(&mut buf)
                .map_err(|e| CryptoError::Random(e.to_string()).into_lua_err())?;
            lua.create_string(buf)
        })?,
    )?;
    native.set(
        "crc32",
        lua.create_function(|_, s: LuaString| Ok(f64::from(crc32(&s.as_bytes()))))?,
    )?;
    native.set(
        "to_hex",
        lua.create_function(|_, s: LuaString| Ok(hex::encode(s.as_bytes())))?,
    )?;
    Ok(())
}
