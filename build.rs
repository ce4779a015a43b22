//! Release builds of the `moongate` binary keep their relocations (`--emit-relocs`), which
//! `scripts/bolt` needs to lay the code out again from a profile. They sit in sections that are
//! never loaded, so the binary runs the same with them; dev and test builds skip them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() == Ok("release")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,--emit-relocs");
    }
}
