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
}
