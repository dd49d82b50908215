//! Symbol look-ups in the loaded objects' own dynamic symbol tables, without `dlsym`.
//!
//! The guard interposes `dlsym` itself (`hooks/dlsym.rs`), so the real one has to be found some
//! other way: this walks the loaded objects with `dl_iterate_phdr` (which takes no lock a hook
//! could hold, allocates nothing, and works before any constructor ran) and searches each
//! object's GNU hash table. It also tells which object an address belongs to.

use std::ffi::CStr;

use libc::{c_int, c_void, dl_phdr_info, size_t, Elf64_Phdr};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: i64 = 0;
pub const DT_PLTRELSZ: i64 = 2;
pub const DT_RELA: i64 = 7;
pub const DT_RELASZ: i64 = 8;
pub const DT_JMPREL: i64 = 23;
/// The number of `R_*_RELATIVE` entries at the start of DT_RELA (glibc skips them as one run).
pub const DT_RELACOUNT: i64 = 0x6fff_fff9;
pub const DT_STRTAB: i64 = 5;
pub const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_VERSYM: i64 = 0x6fff_fff0;
const STT_FUNC: u8 = 2;
/// versym bit of a non-default version (`name@VERSION`, not `name@@VERSION`).
const VERSYM_HIDDEN: u16 = 0x8000;

/// The address range an object's loadable segments occupy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn contains(&self, addr: usize) -> bool {
        self.start <= addr && addr < self.end
    }
}

#[repr(C)]
pub struct Elf64Sym {
    pub st_name: u32,
    st_info: u8,
    st_other: u8,
    pub st_shndx: u16,
    st_value: u64,
    st_size: u64,
}

#[repr(C)]
struct Elf64Dyn {
    d_tag: i64,
    d_val: u64,
}

/// One loaded object, as `dl_iterate_phdr` describes it.
pub struct Object<'a> {
    bias: usize,
    phdrs: &'a [Elf64_Phdr],
}

impl Object<'_> {
    fn span(&self) -> Span {
        let mut span = Span {
            start: usize::MAX,
            end: 0,
        };
        for ph in self.phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
            let start = self.bias.wrapping_add(ph.p_vaddr as usize);
            span.start = span.start.min(start);
            span.end = span.end.max(start.wrapping_add(ph.p_memsz as usize));
        }
        if span.start > span.end {
            span = Span::default();
        }
        span
    }

    /// The load bias: what the object's virtual addresses are offset by.
    pub fn bias(&self) -> usize {
        self.bias
    }

    /// The object's program headers.
    pub fn phdrs(&self) -> &[Elf64_Phdr] {
        self.phdrs
    }

    /// Calls `each` with every entry of the object's dynamic array (tag, value), addresses made
    /// absolute. False when the object has none.
    pub fn dynamic(&self, mut each: impl FnMut(i64, usize)) -> bool {
        let Some(dynamic) = self.phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
            return false;
        };
        let mut entry = self.bias.wrapping_add(dynamic.p_vaddr as usize) as *const Elf64Dyn;
        loop {
            // SAFETY: PT_DYNAMIC of a loaded object points at its mapped, DT_NULL-terminated
            // dynamic array.
            let d = unsafe { &*entry };
            if d.d_tag == DT_NULL {
                return true;
            }
            // glibc relocates most objects' dynamic entries in place; the vDSO's stay
            // relative. An address below the bias is relative (sizes are passed as they are:
            // the callers know which tags are addresses).
            let v = d.d_val as usize;
            let abs = if v < self.bias {
                self.bias.wrapping_add(v)
            } else {
                v
            };
            each(d.d_tag, if is_address(d.d_tag) { abs } else { v });
            // SAFETY: not past DT_NULL, which ends the array.
            entry = unsafe { entry.add(1) };
        }
    }

    /// The default-version definition of a function named `name` in this object's own table.
    pub fn function(&self, name: &CStr) -> Option<usize> {
        let (mut strtab, mut symtab, mut gnu_hash, mut versym) = (0usize, 0usize, 0usize, 0usize);
        let found = self.dynamic(|tag, value| match tag {
            DT_STRTAB => strtab = value,
            DT_SYMTAB => symtab = value,
            DT_GNU_HASH => gnu_hash = value,
            DT_VERSYM => versym = value,
            _ => {}
        });
        if !found || strtab == 0 || symtab == 0 || gnu_hash == 0 {
            return None;
        }
        // SAFETY: the three tables belong to a loaded object and are laid out as the ELF gABI
        // and the GNU hash format describe; every index read is bounded by that format.
        unsafe { lookup(name, strtab, symtab, gnu_hash, versym) }.map(|v| self.bias + v)
    }

    /// Every definition of function `name` in this object's own table (every version), as
    /// absolute addresses.
    pub fn definitions(&self, name: &CStr, mut each: impl FnMut(usize)) {
        let (mut strtab, mut symtab, mut gnu_hash, mut versym) = (0usize, 0usize, 0usize, 0usize);
        let found = self.dynamic(|tag, value| match tag {
            DT_STRTAB => strtab = value,
            DT_SYMTAB => symtab = value,
            DT_GNU_HASH => gnu_hash = value,
            DT_VERSYM => versym = value,
            _ => {}
        });
        if !found || strtab == 0 || symtab == 0 || gnu_hash == 0 {
            return;
        }
        let bias = self.bias;
        // SAFETY: as in `function`.
        unsafe {
            definitions(name, strtab, symtab, gnu_hash, versym, &mut |value, _| {
                each(bias + value);
                false
            })
        };
    }
}

/// Dynamic tags whose value is an address (the others are sizes, counts, flags, offsets).
fn is_address(tag: i64) -> bool {
    matches!(
        tag,
        DT_STRTAB | DT_SYMTAB | DT_GNU_HASH | DT_VERSYM | DT_RELA | DT_JMPREL
    )
}

fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    })
}

/// Searches one GNU hash table for a defined function `name`, default version first.
///
/// # Safety
/// The addresses must be an object's mapped string table, symbol table, GNU hash table and
/// (if non-zero) version table.
unsafe fn lookup(
    name: &CStr,
    strtab: usize,
    symtab: usize,
    gnu_hash_at: usize,
    versym: usize,
) -> Option<usize> {
    let (mut default, mut hidden_match) = (None, None);
    // SAFETY: the caller's tables.
    unsafe {
        definitions(
            name,
            strtab,
            symtab,
            gnu_hash_at,
            versym,
            &mut |value, hidden| {
                if hidden {
                    hidden_match = hidden_match.or(Some(value));
                    false
                } else {
                    default = Some(value);
                    true
                }
            },
        )
    };
    default.or(hidden_match)
}

/// Calls `each` with the value of every definition of function `name` in one GNU hash table
/// (every version; indirect functions left out: their value is the resolver), and whether it
/// is a non-default version, until `each` returns true.
///
/// # Safety
/// As for `lookup`.
unsafe fn definitions(
    name: &CStr,
    strtab: usize,
    symtab: usize,
    gnu_hash_at: usize,
    versym: usize,
    each: &mut dyn FnMut(usize, bool) -> bool,
) {
    let want = name.to_bytes();
    let hash = gnu_hash(want);
    let header = gnu_hash_at as *const u32;
    // SAFETY: the caller's tables; header words, bloom words, buckets and chains follow in
    // that order (the bloom filter is skipped: the buckets answer alone).
    unsafe {
        let nbuckets = *header;
        let symoffset = *header.add(1);
        let bloom_size = *header.add(2) as usize;
        if nbuckets == 0 {
            return;
        }
        let buckets = (header.add(4) as *const usize).add(bloom_size) as *const u32;
        let chains = buckets.add(nbuckets as usize);
        let mut index = *buckets.add((hash % nbuckets) as usize);
        if index < symoffset {
            return;
        }
        loop {
            let chain_hash = *chains.add((index - symoffset) as usize);
            if (chain_hash | 1) == (hash | 1) {
                let sym = &*(symtab as *const Elf64Sym).add(index as usize);
                let kind = sym.st_info & 0xf;
                let sym_name = CStr::from_ptr((strtab + sym.st_name as usize) as *const _);
                if sym.st_shndx != 0 && kind == STT_FUNC && sym_name.to_bytes() == want {
                    let hidden = versym != 0
                        && *(versym as *const u16).add(index as usize) & VERSYM_HIDDEN != 0;
                    if each(sym.st_value as usize, hidden) {
                        return;
                    }
                }
            }
            if chain_hash & 1 != 0 {
                return;
            }
            index += 1;
        }
    }
}

/// Calls `each` with every loaded object, in the loader's order, until it returns true.
pub fn walk(mut each: impl FnMut(&Object, Span) -> bool) {
    type Each<'a> = &'a mut dyn FnMut(&Object, Span) -> bool;
    unsafe extern "C" fn visit(info: *mut dl_phdr_info, _size: size_t, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for one object, and our closure.
        let (info, each) = unsafe { (&*info, &mut *(data as *mut Each)) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        let object = Object {
            bias: info.dlpi_addr as usize,
            // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded object.
            phdrs: unsafe {
                std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum))
            },
        };
        let span = object.span();
        c_int::from(each(&object, span))
    }
    let mut each: Each = &mut each;
    // SAFETY: `visit` matches dl_iterate_phdr's callback type and uses `each` only.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut each as *mut Each).cast()) };
}

/// The first definition of function `name` in the objects loaded after the one holding `after`
/// (what `dlsym(RTLD_NEXT, name)` gives that object), else in one before it; with the span of
/// the object that defines it.
pub fn next_function(name: &CStr, after: usize) -> Option<(usize, Span)> {
    let (mut passed, mut found, mut fallback) = (false, None, None);
    walk(|object, span| {
        if span.contains(after) {
            passed = true;
            return false;
        }
        match object.function(name) {
            Some(addr) if passed => {
                found = Some((addr, span));
                true
            }
            Some(addr) => {
                fallback = fallback.or(Some((addr, span)));
                false
            }
            None => false,
        }
    });
    found.or(fallback)
}

/// This library's own definition of function `name` (its export), from its symbol table.
pub fn own_function(name: &CStr) -> Option<usize> {
    let here = own_function as *const () as usize;
    let mut found = None;
    walk(|object, span| {
        if span.contains(here) {
            found = object.function(name);
            return true;
        }
        false
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_hash_matches_the_reference_values() {
        // Values from the GNU hash specification's reference function.
        assert_eq!(gnu_hash(b""), 5381);
        assert_eq!(gnu_hash(b"printf"), 0x156b_2bb8);
    }

    #[test]
    fn finds_libc_functions_without_dlsym() {
        let here = finds_libc_functions_without_dlsym as *const () as usize;
        let (addr, span) = next_function(c"getpid", here).expect("getpid is defined by libc");
        assert!(span.contains(addr));
        assert_eq!(addr, libc::getpid as *const () as usize);
        assert!(next_function(c"no_such_function_anywhere", here).is_none());
    }
}
