//! Pointing the hooked names of objects opened with `RTLD_DEEPBIND` back at the guard.
//!
//! A library opened with `RTLD_DEEPBIND` looks its symbols up in its own scope (itself, then its
//! dependencies, libc among them) before the global one, so its `connect` binds to libc's, past
//! this library. The `dlopen` hook lets the loader do that (the plugin keeps its own
//! definitions of everything else) and afterwards rewrites the relocation slots that name a
//! hooked function: `R_X86_64_JUMP_SLOT` and `R_X86_64_GLOB_DAT` (and `R_X86_64_64` with no
//! addend: a function pointer in data) in `DT_RELA` and `DT_JMPREL`.
//!
//! Which slots: in every object of this namespace but libc and this library, a slot whose value
//! is in libc or is the function the guard chains to (a bound, unguarded entry: only a deep
//! scope binds one); in objects loaded since `mark`, also a lazy `JUMP_SLOT` not bound yet
//! (still pointing into its own object's PLT), unless the object defines the name itself. A
//! slot in a RELRO page is written by making that page writable for the store and read-only
//! again; each store is one aligned 8-byte write, so a thread calling through the slot
//! meanwhile sees the old or the new function.
//!
//! Everything here runs inside `dl_iterate_phdr` (whose lock keeps the objects loaded) and
//! only reads memory, calls `mprotect`, and walks the objects again (the lock is recursive): no
//! call into the loader.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::Elf64_Phdr;

use crate::dynsym::{self, Elf64Sym, Object, Span};
use crate::hooks::dlsym::{each_hooked, guard_function, resolve_chained};
use crate::real;

const R_X86_64_64: u32 = 1;
const R_X86_64_GLOB_DAT: u32 = 6;
const R_X86_64_JUMP_SLOT: u32 = 7;
const PT_LOAD: u32 = 1;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PF_W: u32 = 2;

#[repr(C)]
struct Elf64Rela {
    r_offset: u64,
    r_info: u64,
    r_addend: i64,
}

/// The loaded objects before a `dlopen`: how many, and the last one (its bias and program
/// headers), so that the objects after it are known to be new.
pub struct Mark {
    count: usize,
    last: (usize, usize),
}

/// Notes the objects loaded now.
pub fn mark() -> Mark {
    let mut m = Mark {
        count: 0,
        last: (0, 0),
    };
    dynsym::walk(|object, _| {
        m.count += 1;
        m.last = identity(object);
        false
    });
    m
}

fn identity(object: &Object) -> (usize, usize) {
    (object.bias(), object.phdrs().as_ptr() as usize)
}

/// The addresses a bound, unguarded slot can hold: every definition in libc of a name the
/// guard hooks (every version), and the functions the guard chains to. Sorted, so that a slot
/// is tested with a binary search before its symbol's name is read (most slots of most
/// objects point into libc at functions the guard does not hook).
struct Known {
    addrs: [usize; KNOWN_MAX],
    len: usize,
    /// False when more than KNOWN_MAX were found: every slot's name is then read.
    complete: bool,
}

const KNOWN_MAX: usize = 160;

impl Known {
    fn gather(libc: Span) -> Known {
        let mut k = Known {
            addrs: [0; KNOWN_MAX],
            len: 0,
            complete: true,
        };
        let mut add = |addr: usize| {
            if addr == 0 {
                return;
            }
            if k.len == KNOWN_MAX {
                k.complete = false;
            } else {
                k.addrs[k.len] = addr;
                k.len += 1;
            }
        };
        dynsym::walk(|object, span| {
            if !(libc.start != 0 && span.contains(libc.start)) {
                return false;
            }
            each_hooked(|name, chained| {
                add(chained);
                let mut buf = [0u8; 64];
                if name.len() < buf.len() {
                    buf[..name.len()].copy_from_slice(name);
                    if let Ok(name) = CStr::from_bytes_until_nul(&buf) {
                        object.definitions(name, &mut add);
                    }
                }
            });
            true
        });
        k.addrs[..k.len].sort_unstable();
        k
    }

    /// Whether a slot holding `value` may need redirecting.
    #[inline]
    fn may_hold(&self, value: usize, libc: Span) -> bool {
        let known = &self.addrs[..self.len];
        if self.complete {
            // Most slots hold an address outside the range (the object's own functions and
            // data, libc's other functions): two compares.
            match (known.first(), known.last()) {
                (Some(&lo), Some(&hi)) if lo <= value && value <= hi => {
                    known.binary_search(&value).is_ok()
                }
                _ => false,
            }
        } else {
            libc.contains(value) || known.contains(&value)
        }
    }
}

/// Redirects the hooked names' slots (see the module comment); `since` tells which objects are
/// new.
pub fn redirect(since: &Mark) {
    resolve_chained();
    let libc = real::libc_span();
    let here = redirect as *const () as usize;
    let page = page_size();
    let known = Known::gather(libc);
    // Whether `since.last` is still loaded: if not (unloaded meanwhile), new objects are
    // counted instead.
    let mut last_seen = false;
    dynsym::walk(|object, _| {
        last_seen |= identity(object) == since.last;
        false
    });
    let (mut index, mut past_last) = (0usize, false);
    dynsym::walk(|object, span| {
        let new = if last_seen {
            past_last
        } else {
            index >= since.count
        };
        index += 1;
        past_last |= identity(object) == since.last;
        let skip = span.contains(here) || (libc.start != 0 && span.contains(libc.start));
        if !skip {
            redirect_object(object, span, &known, libc, new, page);
        }
        false
    });
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// The relocation tables of one object: (address, size in bytes) of DT_RELA and DT_JMPREL,
/// and how many relative relocations open DT_RELA (no symbol: skipped).
struct Tables {
    symtab: usize,
    strtab: usize,
    rela: (usize, usize),
    jmprel: (usize, usize),
    relative: usize,
}

fn tables(object: &Object) -> Option<Tables> {
    let mut t = Tables {
        symtab: 0,
        strtab: 0,
        rela: (0, 0),
        jmprel: (0, 0),
        relative: 0,
    };
    let found = object.dynamic(|tag, value| match tag {
        dynsym::DT_SYMTAB => t.symtab = value,
        dynsym::DT_STRTAB => t.strtab = value,
        dynsym::DT_RELA => t.rela.0 = value,
        dynsym::DT_RELASZ => t.rela.1 = value,
        dynsym::DT_JMPREL => t.jmprel.0 = value,
        dynsym::DT_PLTRELSZ => t.jmprel.1 = value,
        dynsym::DT_RELACOUNT => t.relative = value,
        _ => {}
    });
    (found && t.symtab != 0 && t.strtab != 0).then_some(t)
}

fn redirect_object(object: &Object, span: Span, known: &Known, libc: Span, new: bool, page: usize) {
    let Some(t) = tables(object) else { return };
    for (at, size, skip) in [
        (t.rela.0, t.rela.1, t.relative),
        (t.jmprel.0, t.jmprel.1, 0),
    ] {
        if at == 0 {
            continue;
        }
        let count = size / std::mem::size_of::<Elf64Rela>();
        for i in skip.min(count)..count {
            // SAFETY: DT_RELA/DT_JMPREL of a loaded object point at `size` bytes of Elf64_Rela
            // entries (x86-64 uses RELA only).
            let rela = unsafe { &*(at as *const Elf64Rela).add(i) };
            redirect_slot(object, span, &t, rela, known, libc, new, page);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn redirect_slot(
    object: &Object,
    span: Span,
    t: &Tables,
    rela: &Elf64Rela,
    known: &Known,
    libc: Span,
    new: bool,
    page: usize,
) {
    let kind = (rela.r_info & 0xffff_ffff) as u32;
    let index = (rela.r_info >> 32) as usize;
    let wanted = match kind {
        R_X86_64_JUMP_SLOT | R_X86_64_GLOB_DAT => true,
        R_X86_64_64 => rela.r_addend == 0,
        _ => false,
    };
    if !wanted || index == 0 {
        return;
    }
    let slot = object.bias().wrapping_add(rela.r_offset as usize);
    if !slot.is_multiple_of(8) || !span.contains(slot) {
        return;
    }
    // SAFETY: an aligned slot inside the object's mapped segments (checked above).
    let value = unsafe { AtomicUsize::from_ptr(slot as *mut usize) }.load(Ordering::Relaxed);
    let maybe_lazy = new && kind == R_X86_64_JUMP_SLOT && span.contains(value);
    if !(maybe_lazy || (value != 0 && known.may_hold(value, libc))) {
        return;
    }
    // SAFETY: the symbol index of a relocation of this object indexes its DT_SYMTAB, and the
    // symbol's name offset its DT_STRTAB (NUL-terminated strings).
    let (sym, name) = unsafe {
        let sym = &*(t.symtab as *const Elf64Sym).add(index);
        let name = CStr::from_ptr((t.strtab + sym.st_name as usize) as *const libc::c_char);
        (sym, name)
    };
    if sym.st_shndx != 0 {
        // Defined here: the object's own function, which DEEPBIND keeps.
        return;
    }
    let Some((ours, chained)) = guard_function(name.to_bytes()) else {
        return;
    };
    let unguarded = value != 0 && (libc.contains(value) || value == chained);
    if !(unguarded || (maybe_lazy && object.function(name).is_none())) {
        return;
    }
    let Some(target) = dynsym::own_function(ours) else {
        return;
    };
    if target != value {
        store(object.phdrs(), object.bias(), slot, target, page);
    }
}

/// Writes `value` into `slot`: directly in a writable segment, or with the RELRO page made
/// writable for the store and read-only again. Skipped when the slot is in neither.
fn store(phdrs: &[Elf64_Phdr], bias: usize, slot: usize, value: usize, page: usize) {
    let page_of = |addr: usize| addr & !(page - 1);
    let in_relro = phdrs.iter().any(|p| {
        let start = bias.wrapping_add(p.p_vaddr as usize);
        p.p_type == PT_GNU_RELRO
            && page_of(start) <= slot
            && slot < page_of(start.wrapping_add(p.p_memsz as usize))
    });
    let writable = phdrs.iter().any(|p| {
        let start = bias.wrapping_add(p.p_vaddr as usize);
        p.p_type == PT_LOAD
            && p.p_flags & PF_W != 0
            && start <= slot
            && slot < start.wrapping_add(p.p_memsz as usize)
    });
    let cell = page_of(slot) as *mut libc::c_void;
    if in_relro {
        // SAFETY: the page holds this object's RELRO data, which the loader made read-only;
        // it is made writable for one store and read-only again.
        if unsafe { libc::mprotect(cell, page, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
            return;
        }
    } else if !writable {
        return;
    }
    // SAFETY: an aligned slot in a mapped, now writable page of the object.
    unsafe { AtomicUsize::from_ptr(slot as *mut usize) }.store(value, Ordering::Release);
    if in_relro {
        // SAFETY: as above, back to what the loader set.
        unsafe { libc::mprotect(cell, page, libc::PROT_READ) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libc_relocation_tables() {
        let getpid = libc::getpid as *const () as usize;
        let mut seen = None;
        dynsym::walk(|object, span| {
            if span.contains(getpid) {
                seen = tables(object).map(|t| (t.rela.1, t.jmprel.1));
                return true;
            }
            false
        });
        let (rela, jmprel) = seen.expect("libc has a dynamic section with symbols");
        assert!(rela > 0 && rela.is_multiple_of(std::mem::size_of::<Elf64Rela>()));
        assert!(jmprel.is_multiple_of(std::mem::size_of::<Elf64Rela>()));
    }

    #[test]
    fn the_known_addresses_are_libcs_hooked_functions_only() {
        let here = the_known_addresses_are_libcs_hooked_functions_only as *const () as usize;
        let libc = real::libc_span();
        let known = Known::gather(libc);
        assert!(known.complete && known.len >= 60, "{} found", known.len);
        let (sendto, _) = dynsym::next_function(c"sendto", here).expect("libc's sendto");
        assert!(known.may_hold(sendto, libc));
        let (getpid, _) = dynsym::next_function(c"getpid", here).expect("libc's getpid");
        assert!(!known.may_hold(getpid, libc));
        assert!(!known.may_hold(here, libc));
    }

    #[test]
    fn a_mark_sees_the_loaded_objects() {
        let m = mark();
        assert!(m.count >= 2, "the program and libc at least");
        assert_ne!(m.last, (0, 0));
    }
}
