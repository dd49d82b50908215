// Builds the C shim for the C-variadic exec functions (execl, execlp, execle), which stable
// Rust cannot define, and exports them: rustc's version script lists only Rust items, so a
// second version script adds these (the linker, rust-lld or GNU ld, merges the two).
fn main() {
    println!("cargo:rerun-if-changed=csrc/variadic.c");
    println!("cargo:rerun-if-changed=csrc/exports.map");
    cc::Build::new()
        .file("csrc/variadic.c")
        .define("_GNU_SOURCE", None)
        .warnings(true)
        .compile("egress_variadic");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/csrc/exports.map");
    // Link the unwinder (used only by catch_unwind around every hook) statically. Listed by
    // this crate, it comes before std's `-lgcc_s` on the link line, and with --as-needed
    // libgcc_s.so is then not a dependency at all: one library fewer for the loader to find,
    // map and relocate in every process the guard enters (measured in docs/benchmarks.md).
    println!("cargo:rustc-link-lib=static=gcc_eh");
}
