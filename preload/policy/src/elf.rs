//! Which programs the guard library cannot enter, decided from the file before it runs.
//!
//! Pure and allocation-free: the caller supplies a reader, so the same code serves the
//! launcher (for COMMAND) and the library's exec hooks (deep in the tree, where no heap may
//! be used).

/// What a file is, as far as the guard is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// A dynamically linked program for this architecture and glibc's loader.
    Guardable,
    /// A `#!` script; its interpreter (bytes `start..end` of the first line) decides.
    Script { start: usize, end: usize },
    /// The library cannot load into it: why.
    Unguarded(&'static str),
    /// Not a program we recognise (the kernel will refuse it or run it as it sees fit).
    Unknown,
}

#[cfg(target_arch = "x86_64")]
const OUR_MACHINE: u16 = 62;
#[cfg(target_arch = "aarch64")]
const OUR_MACHINE: u16 = 183;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const OUR_MACHINE: u16 = 0;

const MUSL: &str = "musl program: the glibc guard library cannot load into it";
const UNKNOWN_LOADER: &str =
    "program with an unknown dynamic loader: the guard library cannot load into it";

/// Why: a static program.
pub const STATIC: &str = "statically linked: no dynamic loader reads LD_PRELOAD";
/// Why: a Go program (static or not).
pub const GO: &str =
    "Go program: it makes system calls directly, which the guard library does not see";

/// True when the kernel layer (a seccomp filter supervised by the launcher) can guard a
/// program the library cannot enter for this reason: one that runs 64-bit code of this
/// machine with no change of privileges. Not for set-id or capability programs (the filter
/// needs no-new-privs, which would take their privileges away), 32-bit or foreign programs
/// (another system call ABI), or programs the check could not read (possibly dynamic: the
/// library would load too and every call would be decided twice).
pub fn kernel_layer_applies(reason: &str) -> bool {
    reason == STATIC || reason == GO || reason == MUSL || reason == UNKNOWN_LOADER
}

/// True when the program's loader fails outright (instead of ignoring the library) if our
/// library is in `LD_PRELOAD`: to run such a program unguarded, the library must be removed
/// from its environment.
pub fn preload_is_fatal(reason: &str) -> bool {
    reason == MUSL || reason == UNKNOWN_LOADER
}

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const NT_GO_BUILDID: u32 = 4;

/// The credentials of the process that will exec: what the kernel compares a program's set-id
/// bits against to decide secure execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub egid: u32,
    /// `PR_GET_NO_NEW_PRIVS`: set-id bits do not change the ids.
    pub no_new_privs: bool,
}

/// What the secure-execution decision needs to know about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIds {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// It has a `security.capability` attribute.
    pub caps: bool,
    /// It lies on a `nosuid` mount (set-id bits and file capabilities are ignored).
    pub nosuid: bool,
}

/// Why the loader will ignore `LD_PRELOAD` for `file` run by a process with `creds`: secure
/// execution, decided as the kernel does (`cap_bprm_creds_from_file`): the new effective uid
/// (the file's owner for a setuid file, unless `nosuid` or no_new_privs) differs from the real
/// uid, or the new effective gid (likewise for setgid, which needs group-execute) differs from
/// the real gid, or file capabilities are gained by a process whose real uid is not root. So
/// root running a root-owned setuid program is not secure execution: the loader honours
/// `LD_PRELOAD`. (An LSM may also ask for it; that is not visible here.)
pub fn secure_exec_reason(file: FileIds, creds: &Credentials) -> Option<&'static str> {
    let honoured = !file.nosuid && !creds.no_new_privs;
    let setuid = honoured && file.mode & 0o4000 != 0;
    let setgid = honoured && file.mode & 0o2010 == 0o2010;
    let euid = if setuid { file.uid } else { creds.euid };
    let egid = if setgid { file.gid } else { creds.egid };
    if euid != creds.ruid {
        Some(if setuid {
            "setuid program: the loader ignores LD_PRELOAD for it"
        } else {
            "run with an effective uid other than the real one: the loader ignores LD_PRELOAD (secure execution)"
        })
    } else if egid != creds.rgid {
        Some(if setgid {
            "setgid program: the loader ignores LD_PRELOAD for it"
        } else {
            "run with an effective gid other than the real one: the loader ignores LD_PRELOAD (secure execution)"
        })
    } else if file.caps && !file.nosuid && creds.ruid != 0 {
        Some("program with file capabilities: the loader ignores LD_PRELOAD for it")
    } else {
        None
    }
}

/// Why a program that cannot be read is not run as if guardable (an execute-only file: the
/// kernel can run it, but the guard cannot look inside).
pub const UNREADABLE: &str =
    "program that cannot be read to check it (execute-only): the guard cannot tell whether it can enter it";

/// Why a relative path is not checked when the directory it will be resolved in is unknown
/// (a spawn whose file actions change to a directory the guard cannot follow).
pub const NO_WORKING_DIRECTORY: &str =
    "relative path in a working directory that cannot be determined: the guard cannot check the program";

/// The most files the kernel runs for one exec: the program and its chain of `#!`
/// interpreters (it fails with `ELOOP` after a handful: `BINPRM_MAX_RECURSION`, 4 rewrites).
/// A longer chain never runs, so the check stops there.
const MAX_CHAIN: usize = 8;

/// What opening a file for the check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A regular file, open for reading: its mode bits, owner and group, file capabilities and
    /// mount flags.
    File(FileIds),
    /// A regular file the caller may execute but not read.
    Unreadable,
    /// A relative path whose directory cannot be determined.
    Undetermined,
    /// Anything else (missing, not executable, not a regular file): the kernel answers the
    /// exec itself.
    Other,
}

/// The files a check reads, opened one at a time.
pub trait ProgramFiles {
    /// Opens `path` (a C string: its last byte is the NUL) for the reads that follow, in
    /// place of the file opened before.
    fn open(&mut self, path: &[u8]) -> Opened;
    /// As `pread` on the open file: fills `buf` from `off`; returns the bytes read.
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> usize;
}

/// The arguments the program will get (for `ld.so` run directly: the program it loads).
pub trait ProgramArgs {
    /// Argument `i` (0 is the program's name) with its terminating NUL, if there is one.
    fn arg(&self, i: usize) -> Option<&[u8]>;
}

/// No arguments known.
pub struct NoArgs;

impl ProgramArgs for NoArgs {
    fn arg(&self, _: usize) -> Option<&[u8]> {
        None
    }
}

/// Why the guard cannot enter the program at `path` (a C string), run with `args` by a process
/// with `creds`, following its `#!` interpreters as the kernel does (a script's interpreter may
/// be a script itself). A relative interpreter path is opened like the program's, in the
/// directory the exec will run in. The dynamic loader run directly (`ld.so PROGRAM`, what `ldd`
/// does) is judged by the program it loads. None: the guard can enter it, or the kernel will
/// refuse it.
pub fn unguarded_reason(
    files: &mut dyn ProgramFiles,
    path: &[u8],
    args: &dyn ProgramArgs,
    creds: &Credentials,
) -> Option<&'static str> {
    let mut runtime = Runtime::NONE;
    check_program(files, path, args, creds, &mut runtime)
}

/// As `unguarded_reason`, and for a guardable program that links a sanitizer runtime which
/// must come first in the initial library list (see `Runtime`), that runtime in `runtime`.
pub fn check_program(
    files: &mut dyn ProgramFiles,
    path: &[u8],
    args: &dyn ProgramArgs,
    creds: &Credentials,
    runtime: &mut Runtime,
) -> Option<&'static str> {
    let mut head = [0u8; 256];
    let mut interp = [0u8; 257];
    let mut interp_len = 0;
    for depth in 0..MAX_CHAIN {
        let name = if depth == 0 {
            path
        } else {
            &interp[..interp_len]
        };
        let file = match files.open(name) {
            Opened::File(file) => file,
            Opened::Unreadable => return Some(UNREADABLE),
            Opened::Undetermined => return Some(NO_WORKING_DIRECTORY),
            Opened::Other => return None,
        };
        if let Some(why) = secure_exec_reason(file, creds) {
            return Some(why);
        }
        let program = classify(&mut |off, buf| files.read_at(off, buf), &mut head);
        match program {
            Program::Unguarded(why) => {
                // `head` may be scratch by now: read the ELF identification again.
                let mut ident = [0u8; 18];
                let got = files.read_at(0, &mut ident);
                let (loader, class) = loader_class(name, &ident[..got]);
                if !loader {
                    return Some(why);
                }
                if depth > 0 {
                    return Some(LOADER_BY_SCRIPT);
                }
                return loaded_program(files, args, class, &mut head, runtime);
            }
            Program::Script { start, end } if end - start < interp.len() => {
                interp[..end - start].copy_from_slice(&head[start..end]);
                interp[end - start] = 0;
                interp_len = end - start + 1;
            }
            Program::Guardable => {
                *runtime = needed_runtime(&mut |off, buf| files.read_at(off, buf));
                return None;
            }
            _ => return None,
        }
    }
    None
}

/// Why a loader named as a `#!` interpreter is not run: what it loads cannot be told.
pub const LOADER_BY_SCRIPT: &str =
    "dynamic loader run as a #! interpreter: the guard cannot tell which program it loads";

/// Whether the file at `name` whose first bytes are in `head` is glibc's dynamic loader (a
/// shared object named `ld-linux*`, which the classification found unguardable: no
/// `PT_INTERP`, or another class), and its ELF class.
fn loader_class(name: &[u8], ident: &[u8]) -> (bool, u8) {
    let name = name.strip_suffix(b"\0").unwrap_or(name);
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let is_dyn = ident.len() >= 18 && &ident[..4] == b"\x7fELF" && u16_at(ident, 16) == 3;
    (
        base.starts_with(b"ld-linux") && is_dyn,
        ident.get(4).copied().unwrap_or(0),
    )
}

/// ld.so's options that take a value (glibc 2.36 `rtld.c`); the first argument that is not an
/// option is the program.
const LOADER_VALUE_OPTIONS: &[&[u8]] = &[
    b"--library-path",
    b"--inhibit-rpath",
    b"--audit",
    b"--preload",
    b"--argv0",
    b"--glibc-hwcaps-prepend",
    b"--glibc-hwcaps-mask",
];

/// The loader's modes that print and exit without running any program's code (`ldd` uses
/// `--verify` and `LD_TRACE_LOADED_OBJECTS`, which the caller checks in the environment).
const LOADER_INSPECT_OPTIONS: &[&[u8]] = &[
    b"--list",
    b"--verify",
    b"--help",
    b"--version",
    b"--list-tunables",
    b"--list-diagnostics",
];

/// The index of the program the loader run directly with `args` will load (its first
/// non-option argument), and whether an option asks it only to inspect (list, verify, print).
fn loader_program(args: &dyn ProgramArgs) -> (Option<usize>, bool) {
    let mut inspect = false;
    let mut i = 1;
    while let Some(arg) = args.arg(i) {
        let bare = arg.strip_suffix(b"\0").unwrap_or(arg);
        if bare == b"--" {
            return (args.arg(i + 1).map(|_| i + 1), inspect);
        }
        if !bare.starts_with(b"--") {
            return (Some(i), inspect);
        }
        inspect |= LOADER_INSPECT_OPTIONS.contains(&bare);
        i += if LOADER_VALUE_OPTIONS.contains(&bare) {
            2
        } else {
            1
        };
    }
    (None, inspect)
}

/// True when `path` (the program's file; for the launcher, COMMAND) is the dynamic loader run
/// with `args` in a mode that runs no program code (`--list`, `--verify`, no program): nothing
/// loads the guard, nothing is left to guard. `tracing`: `LD_TRACE_LOADED_OBJECTS` is set
/// (what `ldd` does), which makes the loader list the libraries and exit.
pub fn loader_runs_no_program(path: &[u8], args: &dyn ProgramArgs, tracing: bool) -> bool {
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    if !base.starts_with(b"ld-linux") {
        return false;
    }
    let (program, inspect) = loader_program(args);
    program.is_none() || inspect || tracing
}

/// The loader run directly maps the program named by its first non-option argument into its
/// own process, `LD_PRELOAD` first, without secure execution (the loader file is not set-id):
/// it is as guardable as that program. A program of another class makes the loader fail;
/// no program (`--help`, `--version`) runs nothing.
fn loaded_program(
    files: &mut dyn ProgramFiles,
    args: &dyn ProgramArgs,
    loader_class: u8,
    head: &mut [u8; 256],
    runtime: &mut Runtime,
) -> Option<&'static str> {
    let program = args.arg(loader_program(args).0?)?;
    if !matches!(files.open(program), Opened::File(_)) {
        return None; // the loader will fail to open it (or it is unreadable: it fails too)
    }
    let mut class = [0u8; 5];
    files.read_at(0, &mut class);
    match classify(&mut |off, buf| files.read_at(off, buf), head) {
        Program::Unguarded(why) if class[4] == loader_class || loader_class == 2 => Some(why),
        Program::Guardable => {
            *runtime = needed_runtime(&mut |off, buf| files.read_at(off, buf));
            None
        }
        _ => None,
    }
}

/// A sanitizer runtime a program links (`DT_NEEDED`) that insists on being first in the
/// initial library list: AddressSanitizer aborts ("ASan runtime does not come first") and
/// ThreadSanitizer and HWASan check the same, when a preloaded library comes before them. Its
/// soname (without NUL) is `name[..len]`; `len` 0: none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runtime {
    pub name: [u8; 48],
    pub len: usize,
}

impl Runtime {
    pub const NONE: Runtime = Runtime {
        name: [0u8; 48],
        len: 0,
    };

    pub fn get(&self) -> Option<&[u8]> {
        (self.len > 0).then(|| &self.name[..self.len])
    }
}

/// Sonames of the runtimes that must come first (GCC's and Clang's shared runtimes).
const FIRST_RUNTIMES: &[&[u8]] = &[
    b"libasan.so",
    b"libtsan.so",
    b"libhwasan.so",
    b"libclang_rt.asan",
    b"libclang_rt.tsan",
    b"libclang_rt.hwasan",
];

/// True when `entry` (an `LD_PRELOAD` entry: a soname or a path) is a runtime that must come
/// first.
pub fn is_first_runtime(entry: &[u8]) -> bool {
    let base = entry.rsplit(|&b| b == b'/').next().unwrap_or(entry);
    FIRST_RUNTIMES.iter().any(|r| base.starts_with(r))
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
/// Dynamic entries looked at (real programs have 25-40).
const MAX_DYNAMIC: u64 = 256;

/// The first sanitizer runtime in the `DT_NEEDED` list of the dynamic ELF program read by
/// `read_at` (64-bit, this machine's byte order). A few reads: the dynamic segment, once to
/// find the string table and once for the needed names.
pub fn needed_runtime(read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize) -> Runtime {
    let mut out = Runtime::NONE;
    let mut h = [0u8; 64];
    if read_at(0, &mut h) < 64 || &h[..4] != b"\x7fELF" || h[4] != 2 {
        return out;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&h, 32),
        u64::from(u16_at(&h, 54)),
        u64::from(u16_at(&h, 56)).min(256),
    );
    if phentsize < 56 {
        return out;
    }
    let mut ph = [0u8; 56];
    let mut dynamic = None;
    for i in 0..phnum {
        if read_at(phoff.saturating_add(i * phentsize), &mut ph) < 56 {
            return out;
        }
        if u32_at(&ph, 0) == PT_DYNAMIC {
            dynamic = Some((u64_at(&ph, 8), u64_at(&ph, 32)));
        }
    }
    let Some((dyn_off, dyn_size)) = dynamic else {
        return out;
    };
    let count = (dyn_size / 16).min(MAX_DYNAMIC);
    let mut strtab = None;
    each_dynamic(read_at, dyn_off, count, &mut |_, tag, value| {
        if tag == DT_STRTAB {
            strtab = Some(value);
        }
        true
    });
    let Some(strtab) = strtab else {
        return out;
    };
    // The string table's address, as a file offset (through the load segment holding it).
    let mut str_off = None;
    for i in 0..phnum {
        if read_at(phoff.saturating_add(i * phentsize), &mut ph) < 56 {
            return out;
        }
        let (ty, off, vaddr, filesz) = (
            u32_at(&ph, 0),
            u64_at(&ph, 8),
            u64_at(&ph, 16),
            u64_at(&ph, 32),
        );
        if ty == PT_LOAD && vaddr <= strtab && strtab - vaddr < filesz {
            str_off = Some((strtab - vaddr).saturating_add(off));
            break;
        }
    }
    let Some(str_off) = str_off else {
        return out;
    };
    each_dynamic(read_at, dyn_off, count, &mut |read_at, tag, value| {
        if tag != DT_NEEDED {
            return true;
        }
        let mut name = [0u8; 48];
        let n = read_at(str_off.saturating_add(value), &mut name);
        let Some(len) = name[..n].iter().position(|&b| b == 0) else {
            return true;
        };
        if len > 0 && is_first_runtime(&name[..len]) {
            out.name[..len].copy_from_slice(&name[..len]);
            out.len = len;
            return false;
        }
        true
    });
    out
}

/// Reads a file's bytes at an offset; returns how many it read.
type ReadAt<'a> = dyn FnMut(u64, &mut [u8]) -> usize + 'a;

/// Calls `f(read_at, tag, value)` for the `count` dynamic entries at `dyn_off`, read 16 at a
/// time (one read each), until `DT_NULL`, a short read, or `f` returns false.
fn each_dynamic(
    read_at: &mut ReadAt,
    dyn_off: u64,
    count: u64,
    f: &mut dyn FnMut(&mut ReadAt, u64, u64) -> bool,
) {
    let mut chunk = [0u8; 256];
    for i in 0..count {
        let at = (i % 16 * 16) as usize;
        if at == 0 {
            let want = ((count - i).min(16) * 16) as usize;
            if read_at(dyn_off.saturating_add(i * 16), &mut chunk[..want]) < want {
                return;
            }
        }
        let tag = u64_at(&chunk, at);
        if tag == DT_NULL || !f(read_at, tag, u64_at(&chunk, at + 8)) {
            return;
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Classifies a file. `read_at(offset, buf)` fills `buf` from the file and returns the number
/// of bytes read. `head` is a scratch buffer that receives the first bytes (for `Script`).
pub fn classify(read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize, head: &mut [u8; 256]) -> Program {
    let n = read_at(0, head);
    let h = &head[..n];
    if h.starts_with(b"#!") {
        let line_end = h.iter().position(|&b| b == b'\n').unwrap_or(h.len());
        let line = &h[2..line_end];
        let start = 2 + line
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(line.len());
        let rest = &h[start..line_end];
        let end = start
            + rest
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(rest.len());
        return if end > start {
            Program::Script { start, end }
        } else {
            Program::Unknown
        };
    }
    if n < 64 || &h[..4] != b"\x7fELF" {
        return Program::Unknown;
    }
    if h[4] != 2 {
        return Program::Unguarded("32-bit program: the 64-bit guard library cannot load into it");
    }
    if h[5] != 1 || u16_at(h, 18) != OUR_MACHINE {
        return Program::Unguarded(
            "program for another architecture: the guard library cannot load into it",
        );
    }
    let phoff = u64_at(h, 32);
    let phentsize = u64::from(u16_at(h, 54));
    let phnum = u64::from(u16_at(h, 56)).min(256);
    let sections = Sections {
        off: u64_at(h, 40),
        entsize: u64::from(u16_at(h, 58)),
        num: u64::from(u16_at(h, 60)),
        strndx: u64::from(u16_at(h, 62)),
    };
    if phentsize < 56 {
        return Program::Unknown;
    }
    let mut interp = None;
    let mut go = false;
    let mut ph = [0u8; 56];
    for i in 0..phnum {
        if read_at(phoff + i * phentsize, &mut ph) < 56 {
            return Program::Unknown;
        }
        let (ty, off, size) = (u32_at(&ph, 0), u64_at(&ph, 8), u64_at(&ph, 32));
        match ty {
            PT_INTERP => interp = Some((off, size)),
            PT_NOTE if !go => go = has_go_note(read_at, off, size),
            _ => {}
        }
    }
    // A Go program built without a build-id note (`-ldflags=-buildid=`) still has its build
    // information section (the `head` buffer is free now: this is not a script).
    if go || has_go_buildinfo(read_at, &sections, head) {
        return Program::Unguarded(GO);
    }
    let Some((off, size)) = interp else {
        return Program::Unguarded(STATIC);
    };
    let mut path = [0u8; 128];
    let len = (size as usize).min(path.len());
    let got = read_at(off, &mut path[..len]);
    let path = &path[..got];
    let path = path.split(|&b| b == 0).next().unwrap_or(path);
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    if base.starts_with(b"ld-linux") {
        Program::Guardable
    } else if base.starts_with(b"ld-musl") {
        Program::Unguarded(MUSL)
    } else {
        Program::Unguarded(UNKNOWN_LOADER)
    }
}

const GO_BUILDINFO: &[u8] = b".go.buildinfo\0";
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// How much of the section-name table is searched for the Go section's name (at most 34 reads
/// of 256 bytes; real tables hold a few hundred bytes).
const MAX_SHSTRTAB: u64 = 8 * 1024;

/// Where the section headers are (ELF header fields e_shoff, e_shentsize, e_shnum, e_shstrndx).
struct Sections {
    off: u64,
    entsize: u64,
    num: u64,
    strndx: u64,
}

/// The offset and size of section `i`.
fn section(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    s: &Sections,
    i: u64,
) -> Option<(u32, u64, u64)> {
    let mut sh = [0u8; 64];
    let at = s.off.checked_add(i.checked_mul(s.entsize)?)?;
    (read_at(at, &mut sh) == 64).then(|| (u32_at(&sh, 0), u64_at(&sh, 24), u64_at(&sh, 32)))
}

/// True when the file has a `.go.buildinfo` section that starts with Go's build information
/// magic. Two or three reads for other programs: the section-name table's header and the
/// table itself (where the name is looked for); only a file that has the name gets its section
/// headers read.
fn has_go_buildinfo(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    s: &Sections,
    scratch: &mut [u8; 256],
) -> bool {
    if s.off == 0 || s.entsize < 64 || s.num == 0 || s.strndx >= s.num {
        return false;
    }
    let Some((_, str_off, str_size)) = section(read_at, s, s.strndx) else {
        return false;
    };
    // The name's offset in the table: chunks overlap by the name's length.
    let limit = str_size.min(MAX_SHSTRTAB);
    let step = (scratch.len() - GO_BUILDINFO.len()) as u64;
    let mut name_at = None;
    let mut at = 0;
    while at < limit && name_at.is_none() {
        let want = (limit - at).min(scratch.len() as u64) as usize;
        let n = read_at(str_off + at, &mut scratch[..want]);
        name_at = scratch[..n]
            .windows(GO_BUILDINFO.len())
            .position(|w| w == GO_BUILDINFO)
            .map(|i| at + i as u64);
        if n < want {
            break;
        }
        at += step;
    }
    let Some(name_at) = name_at else {
        return false;
    };
    for i in 0..s.num.min(1024) {
        let Some((name, off, size)) = section(read_at, s, i) else {
            return false;
        };
        if u64::from(name) == name_at && size >= GO_BUILDINFO_MAGIC.len() as u64 {
            let magic = &mut scratch[..GO_BUILDINFO_MAGIC.len()];
            return read_at(off, magic) == magic.len() && magic == GO_BUILDINFO_MAGIC;
        }
    }
    false
}

/// True when the note segment at `off..off+size` holds a Go build-id note.
fn has_go_note(read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize, off: u64, size: u64) -> bool {
    let mut buf = [0u8; 512];
    let len = (size as usize).min(buf.len());
    let n = read_at(off, &mut buf[..len]);
    let notes = &buf[..n];
    let mut at = 0;
    while at + 12 <= notes.len() {
        let namesz = u32_at(notes, at) as usize;
        let descsz = u32_at(notes, at + 4) as usize;
        let ty = u32_at(notes, at + 8);
        let name = notes.get(at + 12..at + 12 + namesz).unwrap_or(&[]);
        if ty == NT_GO_BUILDID && name.starts_with(b"Go\0") {
            return true;
        }
        let next = at
            .saturating_add(12)
            .saturating_add(namesz.next_multiple_of(4))
            .saturating_add(descsz.next_multiple_of(4));
        if next <= at {
            break;
        }
        at = next;
    }
    false
}

/// Why the file read by `read_at` (of `size` bytes) is not a shared library this machine's
/// loader can preload: wrong class, architecture or type, or truncated segments.
pub fn library_problem(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    size: u64,
) -> Option<&'static str> {
    let mut h = [0u8; 64];
    if read_at(0, &mut h) < 64 || &h[..4] != b"\x7fELF" {
        return Some("is not an ELF file");
    }
    if h[4] != 2 || h[5] != 1 || u16_at(&h, 18) != OUR_MACHINE {
        return Some("is built for another architecture or word size");
    }
    if u16_at(&h, 16) != 3 {
        return Some("is not a shared library");
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&h, 32),
        u64::from(u16_at(&h, 54)),
        u64::from(u16_at(&h, 56)),
    );
    if phentsize < 56 || phnum == 0 {
        return Some("has no program headers");
    }
    let mut ph = [0u8; 56];
    for i in 0..phnum.min(256) {
        if read_at(phoff + i * phentsize, &mut ph) < 56 {
            return Some("is truncated");
        }
        const PT_LOAD: u32 = 1;
        let end = u64_at(&ph, 8).saturating_add(u64_at(&ph, 32));
        if u32_at(&ph, 0) == PT_LOAD && end > size {
            return Some("is truncated");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files by name: (path without NUL, mode, contents); None contents: execute-only.
    struct Fake<'a> {
        files: &'a [(&'a str, u32, Option<&'a [u8]>)],
        open: Option<&'a [u8]>,
        opened: usize,
    }

    impl ProgramFiles for Fake<'_> {
        fn open(&mut self, path: &[u8]) -> Opened {
            self.opened += 1;
            self.open = None;
            let name = &path[..path.len() - 1];
            match self.files.iter().find(|f| f.0.as_bytes() == name) {
                Some(&(_, mode, Some(data))) => {
                    self.open = Some(data);
                    Opened::File(FileIds {
                        mode,
                        uid: 0,
                        gid: 0,
                        caps: false,
                        nosuid: false,
                    })
                }
                Some(&(_, _, None)) => Opened::Unreadable,
                None => Opened::Other,
            }
        }

        fn read_at(&mut self, off: u64, buf: &mut [u8]) -> usize {
            let data = self.open.unwrap_or(&[]);
            let from = (off as usize).min(data.len());
            let n = buf.len().min(data.len() - from);
            buf[..n].copy_from_slice(&data[from..from + n]);
            n
        }
    }

    fn check(files: &[(&str, u32, Option<&[u8]>)], path: &str) -> (Option<&'static str>, usize) {
        let mut fake = Fake {
            files,
            open: None,
            opened: 0,
        };
        let mut c = path.as_bytes().to_vec();
        c.push(0);
        let user = Credentials {
            ruid: 1000,
            euid: 1000,
            rgid: 1000,
            egid: 1000,
            no_new_privs: false,
        };
        (unguarded_reason(&mut fake, &c, &NoArgs, &user), fake.opened)
    }

    /// A static x86-64 or aarch64 ELF header: no program headers, so no PT_INTERP.
    fn static_elf() -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&OUR_MACHINE.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h
    }

    /// `static_elf` with section headers: a name table and a `.go.buildinfo` section holding
    /// `content`.
    fn elf_with_buildinfo(content: &[u8]) -> Vec<u8> {
        let mut f = static_elf();
        f.resize(1024, 0);
        let (shoff, strtab, info) = (256usize, 512usize, 600usize);
        f[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        f[60..62].copy_from_slice(&3u16.to_le_bytes());
        f[62..64].copy_from_slice(&1u16.to_le_bytes());
        let names = b"\0.shstrtab\0.go.buildinfo\0";
        f[strtab..strtab + names.len()].copy_from_slice(names);
        f[info..info + content.len()].copy_from_slice(content);
        for (i, name, off, size) in [
            (1, 1u32, strtab, names.len()),
            (2, 11u32, info, content.len()),
        ] {
            let sh = shoff + i * 64;
            f[sh..sh + 4].copy_from_slice(&name.to_le_bytes());
            f[sh + 24..sh + 32].copy_from_slice(&(off as u64).to_le_bytes());
            f[sh + 32..sh + 40].copy_from_slice(&(size as u64).to_le_bytes());
        }
        f
    }

    #[test]
    fn go_is_found_by_its_build_information_section() {
        let go = elf_with_buildinfo(b"\xff Go buildinf:\x08\x02");
        let files: &[(&str, u32, Option<&[u8]>)] = &[("/go", 0o755, Some(&go))];
        assert!(check(files, "/go")
            .0
            .is_some_and(|w| w.contains("Go program")));
        let other = elf_with_buildinfo(b"something else..");
        let files: &[(&str, u32, Option<&[u8]>)] = &[("/c", 0o755, Some(&other))];
        assert!(check(files, "/c")
            .0
            .is_some_and(|w| w.contains("statically linked")));
    }

    #[test]
    fn script_chains_are_followed_to_the_end() {
        let elf = static_elf();
        let files: &[(&str, u32, Option<&[u8]>)] = &[
            ("/a", 0o755, Some(b"#!/b -x\n")),
            ("/b", 0o755, Some(b"#! /c\n")),
            ("/c", 0o755, Some(b"#!/d\n")),
            ("/d", 0o755, Some(&elf)),
        ];
        let (why, opened) = check(files, "/a");
        assert!(
            why.is_some_and(|w| w.contains("statically linked")),
            "{why:?}"
        );
        assert_eq!(opened, 4);
        assert_eq!(check(files, "/c").0, why);
    }

    #[test]
    fn a_loop_of_scripts_stops() {
        let files: &[(&str, u32, Option<&[u8]>)] = &[
            ("/a", 0o755, Some(b"#!/b\n")),
            ("/b", 0o755, Some(b"#!/a\n")),
        ];
        assert_eq!(check(files, "/a"), (None, MAX_CHAIN));
    }

    #[test]
    fn unreadable_programs_and_interpreters_are_not_guardable() {
        let files: &[(&str, u32, Option<&[u8]>)] =
            &[("/s", 0o755, Some(b"#!/x\n")), ("/x", 0o111, None)];
        assert_eq!(check(files, "/x").0, Some(UNREADABLE));
        assert_eq!(check(files, "/s").0, Some(UNREADABLE));
        assert_eq!(check(files, "/missing").0, None);
    }

    #[test]
    fn a_setuid_interpreter_counts() {
        let files: &[(&str, u32, Option<&[u8]>)] = &[
            ("/s", 0o755, Some(b"#!/t\n")),
            ("/t", 0o755, Some(b"#!/u\n")),
            ("/u", 0o4755, Some(b"\x7fELF")),
        ];
        assert!(check(files, "/s").0.is_some_and(|w| w.contains("setuid")));
    }

    fn creds(ruid: u32, euid: u32, rgid: u32, egid: u32) -> Credentials {
        Credentials {
            ruid,
            euid,
            rgid,
            egid,
            no_new_privs: false,
        }
    }

    fn file(mode: u32, uid: u32, gid: u32) -> FileIds {
        FileIds {
            mode,
            uid,
            gid,
            caps: false,
            nosuid: false,
        }
    }

    #[test]
    fn secure_execution_is_decided_by_credentials() {
        let root = creds(0, 0, 0, 0);
        let user = creds(1000, 1000, 1000, 1000);
        // setuid-root run by root: the ids do not change.
        assert_eq!(secure_exec_reason(file(0o4755, 0, 0), &root), None);
        assert!(secure_exec_reason(file(0o4755, 65534, 0), &root).is_some());
        assert!(secure_exec_reason(file(0o4755, 0, 0), &user).is_some());
        // setuid of one's own file: no change either.
        assert_eq!(secure_exec_reason(file(0o4755, 1000, 0), &user), None);
        // setgid needs group-execute to count; the real gid decides.
        assert!(secure_exec_reason(file(0o2755, 0, 43), &user).is_some());
        assert_eq!(secure_exec_reason(file(0o2745, 0, 43), &user), None);
        assert_eq!(secure_exec_reason(file(0o2755, 0, 1000), &user), None);
        // no_new_privs and nosuid mounts ignore the bits.
        let nnp = Credentials {
            no_new_privs: true,
            ..user
        };
        assert_eq!(secure_exec_reason(file(0o6755, 0, 0), &nnp), None);
        let nosuid = FileIds {
            nosuid: true,
            ..file(0o6755, 0, 0)
        };
        assert_eq!(secure_exec_reason(nosuid, &user), None);
        // Already running with differing ids: every exec is secure.
        assert!(secure_exec_reason(file(0o755, 0, 0), &creds(1000, 0, 1000, 1000)).is_some());
        assert!(secure_exec_reason(file(0o755, 0, 0), &creds(0, 0, 1000, 0)).is_some());
        // File capabilities: not for a real root.
        let caps = FileIds {
            caps: true,
            ..file(0o755, 0, 0)
        };
        assert!(secure_exec_reason(caps, &user).is_some());
        assert_eq!(secure_exec_reason(caps, &root), None);
    }

    struct Args<'a>(&'a [&'a [u8]]);

    impl ProgramArgs for Args<'_> {
        fn arg(&self, i: usize) -> Option<&[u8]> {
            self.0.get(i).copied()
        }
    }

    #[test]
    fn the_loader_run_directly_is_judged_by_its_program() {
        let mut loader = static_elf();
        loader[16] = 3; // ET_DYN, no PT_INTERP: a static PIE, like ld.so
        let mut dynamic = static_elf();
        dynamic.resize(256, 0);
        dynamic[32..40].copy_from_slice(&64u64.to_le_bytes());
        dynamic[56..58].copy_from_slice(&1u16.to_le_bytes());
        dynamic[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        dynamic[72..80].copy_from_slice(&200u64.to_le_bytes());
        dynamic[96..104].copy_from_slice(&28u64.to_le_bytes());
        dynamic[200..228].copy_from_slice(b"/lib64/ld-linux-x86-64.so.2\0");
        let stat = static_elf();
        let files: &[(&str, u32, Option<&[u8]>)] = &[
            ("/lib64/ld-linux-x86-64.so.2", 0o755, Some(&loader)),
            ("/usr/bin/static-pie", 0o755, Some(&loader)),
            ("/dyn", 0o755, Some(&dynamic)),
            ("/static", 0o755, Some(&stat)),
            ("/s", 0o755, Some(b"#!/lib64/ld-linux-x86-64.so.2\n")),
        ];
        let user = creds(1000, 1000, 1000, 1000);
        let run = |argv: &[&[u8]]| {
            let mut fake = Fake {
                files,
                open: None,
                opened: 0,
            };
            unguarded_reason(&mut fake, argv[0], &Args(argv), &user)
        };
        let ld: &[u8] = b"/lib64/ld-linux-x86-64.so.2\0";
        assert_eq!(run(&[ld, b"/dyn\0"]), None);
        assert_eq!(run(&[ld, b"--list\0", b"/dyn\0"]), None);
        assert_eq!(run(&[ld, b"--argv0\0", b"x\0", b"/dyn\0"]), None);
        assert_eq!(run(&[ld, b"--version\0"]), None);
        assert!(run(&[ld, b"--preload\0", b"/dyn\0", b"/static\0"])
            .is_some_and(|w| w.contains("statically linked")));
        assert!(run(&[b"/usr/bin/static-pie\0", b"/dyn\0"])
            .is_some_and(|w| w.contains("statically linked")));
        assert_eq!(run(&[b"/s\0", b"/dyn\0"]), Some(LOADER_BY_SCRIPT));
    }

    /// A dynamic ELF whose `DT_NEEDED` list is `needed`, after `filler` other entries.
    fn elf_needing(needed: &[&str], filler: usize) -> Vec<u8> {
        let mut f = static_elf();
        f.resize(4096, 0);
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        // PT_LOAD: the whole file at address 0x1000; PT_DYNAMIC at 1024.
        let load = 64;
        f[load..load + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        f[load + 16..load + 24].copy_from_slice(&0x1000u64.to_le_bytes());
        f[load + 32..load + 40].copy_from_slice(&4096u64.to_le_bytes());
        let dynamic = 120;
        f[dynamic..dynamic + 4].copy_from_slice(&PT_DYNAMIC.to_le_bytes());
        f[dynamic + 8..dynamic + 16].copy_from_slice(&1024u64.to_le_bytes());
        f[dynamic + 32..dynamic + 40].copy_from_slice(&(64u64 * 16).to_le_bytes());
        let mut strings = vec![0u8];
        let mut entries: Vec<(u64, u64)> = vec![(21, 0); filler];
        for n in needed {
            entries.push((DT_NEEDED, strings.len() as u64));
            strings.extend_from_slice(n.as_bytes());
            strings.push(0);
        }
        entries.push((DT_STRTAB, 0x1000 + 512));
        entries.push((DT_NULL, 0));
        f[512..512 + strings.len()].copy_from_slice(&strings);
        for (i, (tag, val)) in entries.iter().enumerate() {
            let at = 1024 + i * 16;
            f[at..at + 8].copy_from_slice(&tag.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&val.to_le_bytes());
        }
        f
    }

    #[test]
    fn a_sanitizer_runtime_is_found_among_the_needed_libraries() {
        let find = |f: &[u8]| {
            let rt = needed_runtime(&mut |off, buf: &mut [u8]| {
                let from = (off as usize).min(f.len());
                let n = buf.len().min(f.len() - from);
                buf[..n].copy_from_slice(&f[from..from + n]);
                n
            });
            rt.get().map(<[u8]>::to_vec)
        };
        let asan = elf_needing(&["libc.so.6", "libasan.so.8"], 20);
        assert_eq!(find(&asan), Some(b"libasan.so.8".to_vec()));
        let tsan = elf_needing(&["libtsan.so.2", "libc.so.6"], 3);
        assert_eq!(find(&tsan), Some(b"libtsan.so.2".to_vec()));
        assert_eq!(find(&elf_needing(&["libc.so.6", "libubsan.so.1"], 0)), None);
        assert_eq!(find(&static_elf()), None);
        assert!(is_first_runtime(b"/usr/lib/libclang_rt.asan-x86_64.so"));
        assert!(!is_first_runtime(b"libasanx.so"));
    }
}
