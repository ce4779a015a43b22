//! AWS: SigV4 request signing (pure, tested on the official suite).

pub mod sigv4;
