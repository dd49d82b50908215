// Links the unwinder statically (as preload/build.rs does, for the same reason): listed by
// this crate, `-lgcc_eh` comes before std's `-lgcc_s`, and with --as-needed libgcc_s.so is not
// loaded at all. Every guarded run starts this launcher: one library fewer to find, map and
// relocate, and no libgcc_s constructor (its CPU-model probe runs CPUID, slow in a VM).
fn main() {
    println!("cargo:rustc-link-lib=static=gcc_eh");
}
