//! Builds nothing. It exists so that `[build-dependencies]` in Cargo.toml takes part in the build: there it gives syn,
//! which every derive macro of the crate's dependencies is compiled with, the features the tests' dependencies give
//! it, so `cargo test` reuses the proc-macros (and everything built with them) that `cargo run` compiled.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
